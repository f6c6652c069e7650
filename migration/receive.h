/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "wire.h"

/* The destination's receive state machine (docs/migration.md, "Receive state machine").
 * It knows nothing of sockets, threads or KVM: the caller reads a header, asks
 * rx_accept_header() whether it is valid here and now and where its payload goes, reads
 * the payload there, and hands the message to rx_step(), which acts through RxOps and
 * moves the state on. Every message that is not valid in the current state fails the
 * machine with a message that says what came in which state. incoming.c drives it from
 * sockets and a real VM; tests/fuzz/fuzz-incoming.c from a byte buffer and a plain
 * mapping. */

typedef enum RxState {
        RX_HELLO,     /* waiting for the HELLOs (connection 0's first) */
        RX_SETUP,     /* VM built, HELLO_ACK sent: the state rehearsal, the RAM map */
        RX_PRECOPY,   /* pages */
        RX_STATE,     /* the state arrived: waiting for COMPLETE */
        RX_READY,     /* restored, READY sent: waiting for COMMIT */
        RX_COMMITTED, /* COMMIT taken: resuming the guest */
        RX_DONE,      /* resumed, ACK sent */
        RX_FAILED,
        _RX_STATE_MAX,
} RxState;

typedef enum RxConnState {
        RX_CONN_NONE,    /* accepted, no HELLO yet */
        RX_CONN_DATA,    /* HELLO taken: pages until FLUSH */
        RX_CONN_FLUSHED, /* FLUSH taken: nothing more */
} RxConnState;

/* Where a message's payload goes. */
typedef enum RxPayload {
        RX_PAYLOAD_NONE,   /* no payload */
        RX_PAYLOAD_RAM,    /* PAGES: read h->len bytes to ram + h->a */
        RX_PAYLOAD_BUFFER, /* read h->len bytes into a buffer, pass it to rx_step() */
} RxPayload;

typedef struct RxMachine RxMachine;

/* The 'conn' of a HELLO on a connection accepted after the first: which data connection
 * it is comes from the HELLO itself. */
#define RX_CONN_NEW MIGRATION_MAX_CONNECTIONS

/* Side effects. Each returns 0 or a negative errno; on failure it may say why with
 * rx_fail() (otherwise a generic message is set). */
typedef struct RxOps {
        /* All HELLOs taken: build the VM from the source's config (not yet validated) and
         * return its RAM, exactly ram_size bytes. */
        int (*build)(RxMachine *m, const char *config, uint64_t ram_size, uint8_t **ret_ram);
        /* STATE_TRIAL: load the state as a trial and put back the VM's own. */
        int (*trial)(RxMachine *m, const uint8_t *state, size_t len, uint64_t *ret_apply_us);
        /* RAM_MAP: may start faulting in the chunks (the map stays valid until rx_free()). */
        int (*prefault)(RxMachine *m, const uint8_t *map, uint64_t chunks);
        /* COMPLETE: every data connection has to end with FLUSH; wait for them (and stop
         * prefaulting). Fails if one did not. */
        int (*end_data)(RxMachine *m);
        int (*restore)(RxMachine *m, const uint8_t *state, size_t len);
        int (*resume)(RxMachine *m);
        /* A reply to the source on connection 0. */
        int (*reply)(RxMachine *m, uint32_t type, uint64_t a, uint64_t b);
        /* ITER_END: a pass ended (statistics). */
        void (*iteration)(RxMachine *m, uint32_t passes);
} RxOps;

struct RxMachine {
        const RxOps *ops;
        void *userdata;

        _Atomic RxState state;
        unsigned n_conns;     /* from connection 0's HELLO */
        unsigned n_hellos;    /* HELLOs taken */
        RxConnState conn[MIGRATION_MAX_CONNECTIONS];
        uint64_t ram_size;    /* from connection 0's HELLO; RAM is that large once built */
        uint8_t *ram;
        char *config;         /* connection 0's config text, until the VM is built */

        bool trial_done, map_seen;
        uint8_t *map;
        uint64_t map_chunks;
        uint32_t iterations;  /* ITER_ENDs taken */
        uint8_t *state_buf;
        uint32_t state_len;

        /* Timings the replies carry (µs). */
        uint64_t header_us[MIGRATION_MAX_CONNECTIONS]; /* when the last header arrived */
        uint64_t state_receive_us, restore_us, resume_us;

        _Atomic uint64_t bytes; /* received, headers and payloads */
        int error_errno;
        char error[MIGRATION_ERROR_MESSAGE_MAX];
        pthread_mutex_t error_lock;
};

void rx_init(RxMachine *m, const RxOps *ops, void *userdata);
/* Frees what the machine holds (the map, the state, the config); not the RAM. */
void rx_free(RxMachine *m);

/* Checks a header that arrived on connection 'conn' (0 is the first one accepted) before
 * anything of its payload is read. Returns 0 and where the payload goes, or fails the
 * machine and returns a negative errno (-EBADMSG, -EPROTO, -ECONNABORTED...). Connection
 * 0 is the main thread's; each data connection may be driven by a thread of its own. */
int rx_accept_header(RxMachine *m, unsigned conn, const MigHeader *h, RxPayload *ret);
/* Takes the message whose header rx_accept_header() accepted, its payload read (into RAM
 * or 'payload'). Returns 0, or fails the machine and returns a negative errno. For a data
 * connection's HELLO, *ret_index (if not NULL) is the connection index it claimed. */
int rx_step(RxMachine *m, unsigned conn, const MigHeader *h, const uint8_t *payload, unsigned *ret_index);

/* Fails the machine (the first reason wins) and returns r. */
int rx_fail(RxMachine *m, int r, const char *fmt, ...) _printf_(3, 4);
RxState rx_get_state(RxMachine *m);
const char *rx_state_to_string(RxState s);
const char *mig_type_to_string(uint32_t type);
/* Copies the failure message ("" if none). */
void rx_get_error(RxMachine *m, char *buf, size_t size);
