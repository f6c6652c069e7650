/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the destination's receive state machine (migration/receive.c) and the
 * parsers behind it (wire headers, the VM config, the saved-state container), fed the
 * source's side of a migration stream as one byte buffer. Guest RAM is a plain mapping;
 * no KVM: loading the state is the container reader's full walk.
 *
 * The input is what the source sends on connection 0, as captured from real migrations
 * (corpus/incoming/, tests/fuzz/capture-incoming.py). A multi-connection capture holds
 * the messages of every connection in the order they arrived: while HELLOs are due, a
 * HELLO after the first is a new connection's; after setup PAGES and ZERO go to the
 * connection the source uses for them (2 MiB chunk % connections), each FLUSH to the
 * first data connection not flushed yet, everything else to connection 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "config.h"
#include "receive.h"
#include "state-stream.h"

#define FUZZ_MAX_RAM (32 * MiB)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Fuzz {
        uint8_t *ram;
        uint64_t ram_size;
} Fuzz;

static int walk_state(const uint8_t *state, size_t len) {
        StateReader r;
        StateSection s;
        volatile uint8_t sink = 0;
        int k;

        k = state_reader_init(&r, state, len);
        if (k < 0)
                return k;
        while ((k = state_reader_next(&r, &s)) > 0)
                for (uint32_t i = 0; i < s.size; i++)
                        sink ^= s.data[i];
        (void)sink;
        return k;
}

static int fz_build(RxMachine *m, const char *config, uint64_t ram_size, uint8_t **ret_ram) {
        Fuzz *f = m->userdata;
        VmConfig *c = NULL;
        char *err = NULL;
        int r;

        r = vm_config_parse_flags(config, VM_CONFIG_PARSE_NO_FILES, &c, &err);
        free(err);
        if (r < 0)
                return r;
        r = c->memory_mib * MiB == ram_size ? 0 : -EBADMSG;
        vm_config_free(c);
        if (r < 0)
                return r;
        if (ram_size > FUZZ_MAX_RAM)
                return -E2BIG;
        f->ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (f->ram == MAP_FAILED) {
                f->ram = NULL;
                return -ENOMEM;
        }
        f->ram_size = ram_size;
        *ret_ram = f->ram;
        return 0;
}

static int fz_trial(RxMachine *m, const uint8_t *state, size_t len, uint64_t *ret_apply_us) {
        *ret_apply_us = 1;
        return walk_state(state, len);
}

static int fz_restore(RxMachine *m, const uint8_t *state, size_t len) {
        return walk_state(state, len);
}

static int fz_prefault(RxMachine *m, const uint8_t *map, uint64_t chunks) {
        volatile uint8_t sink = 0;
        for (uint64_t c = 0; c < chunks; c++)
                sink ^= map[c / 8] & (1u << (c % 8));
        (void)sink;
        return 0;
}

static int fz_ok(RxMachine *m) {
        return 0;
}

static int fz_reply(RxMachine *m, uint32_t type, uint64_t a, uint64_t b) {
        return 0;
}

static const RxOps fuzz_ops = {
        .build = fz_build,
        .trial = fz_trial,
        .prefault = fz_prefault,
        .end_data = fz_ok,
        .restore = fz_restore,
        .resume = fz_ok,
        .reply = fz_reply,
};

/* Which connection a message of the stream goes to (see the top). */
static unsigned route(RxMachine *m, const MigHeader *h) {
        if (rx_get_state(m) == RX_HELLO)
                return m->n_hellos == 0 ? 0 : RX_CONN_NEW; /* the HELLOs of the other connections */
        if (m->n_conns <= 1)
                return 0;
        if (h->type == MIG_PAGES || h->type == MIG_ZERO)
                return (unsigned)((h->a >> MIG_MAP_CHUNK_SHIFT) % m->n_conns);
        if (h->type == MIG_FLUSH)
                for (unsigned i = 1; i < m->n_conns; i++)
                        if (m->conn[i] != RX_CONN_FLUSHED)
                                return i;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Fuzz f = {};
        RxMachine m;
        size_t off = 0;

        rx_init(&m, &fuzz_ops, &f);
        while (size - off >= MIG_HEADER_SIZE) {
                RxState s = rx_get_state(&m);
                RxPayload where;
                MigHeader h;
                unsigned conn;

                if (s == RX_FAILED || s == RX_DONE)
                        break;
                mig_header_decode(data + off, &h);
                off += MIG_HEADER_SIZE;
                conn = route(&m, &h);
                if (conn > 0 && conn < MIGRATION_MAX_CONNECTIONS && m.conn[conn] == RX_CONN_FLUSHED)
                        break; /* a receiver stops reading after FLUSH */
                if (rx_accept_header(&m, conn, &h, &where) < 0)
                        break;
                if (h.len > size - off)
                        break; /* truncated: the peer vanished */
                const uint8_t *payload = where == RX_PAYLOAD_BUFFER ? data + off : NULL;
                if (where == RX_PAYLOAD_RAM)
                        memcpy(m.ram + h.a, data + off, h.len);
                off += h.len;
                if (rx_step(&m, conn, &h, payload, NULL) < 0)
                        break;

        }
        if (getenv("FUZZ_INCOMING_VERBOSE")) { /* how far an input gets, for corpus work */
                char e[MIGRATION_ERROR_MESSAGE_MAX];
                rx_get_error(&m, e, sizeof e);
                fprintf(stderr, "receive state %s after %zu of %zu bytes%s%s\n", rx_state_to_string(rx_get_state(&m)),
                        off, size, e[0] ? ": " : "", e);
        }
        if (f.ram)
                munmap(f.ram, f.ram_size);
        rx_free(&m);
        return 0;
}
