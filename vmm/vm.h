/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "macro.h"

/* A virtual machine: the core object every front end (D-Bus, vmmctl, tests) drives.
 *
 * Threading: all vm_* calls are made from one owner thread (the daemon's event loop, or a
 * test's main thread). vCPUs run on threads of their own and report guest-initiated events
 * (power-off, reset, crash) to the owner through an eventfd: the owner polls
 * vm_get_event_fd() and calls vm_dispatch_events() when it is readable. State changes are
 * reported through the state callback, always on the owner thread. */

typedef enum VmState {
        VM_STATE_CREATED,
        VM_STATE_RUNNING,
        VM_STATE_PAUSED,
        VM_STATE_INCOMING,
        VM_STATE_MIGRATED,
        VM_STATE_MIGRATION_UNKNOWN,
        VM_STATE_STOPPED,
        VM_STATE_CRASHED,
        _VM_STATE_MAX,
        _VM_STATE_INVALID = -EINVAL,
} VmState;

const char *vm_state_to_string(VmState s);
VmState vm_state_from_string(const char *s);

/* The lifecycle requests every front end makes (one control surface), and the one table
 * (vm-state.c) of the states each is valid in. */
typedef enum VmRequest {
        VM_REQUEST_START,
        VM_REQUEST_PAUSE,
        VM_REQUEST_RESUME,
        VM_REQUEST_SHUTDOWN, /* guest-visible power-off request; the guest decides */
        VM_REQUEST_STOP,     /* immediate */
        _VM_REQUEST_MAX,
        _VM_REQUEST_INVALID = -EINVAL,
} VmRequest;

typedef enum VmTransition {
        VM_TRANSITION_INVALID, /* not in this state */
        VM_TRANSITION_ALLOWED, /* the request changes the state (or, shutdown, asks the guest) */
        VM_TRANSITION_ALREADY, /* the state the request leads to holds already */
        VM_TRANSITION_BUSY,    /* start of a VM that runs */
} VmTransition;

const char *vm_request_to_string(VmRequest r);
VmRequest vm_request_from_string(const char *s);
VmTransition vm_request_transition(VmRequest r, VmState s);
/* The core's answer: 1 allowed, 0 already done (the vm_* call succeeds doing nothing),
 * -EBUSY (start of a running or paused VM) or -ESTALE. Front ends that must refuse
 * "already" (the D-Bus API does: Pause() of a paused VM is InvalidState) check
 * vm_request_transition() == VM_TRANSITION_ALLOWED instead. */
int vm_request_check(VmRequest r, VmState s);
/* "created, stopped or crashed": the states where 'r' is allowed, for messages. */
size_t vm_request_allowed_states(VmRequest r, char *buf, size_t size);

typedef struct Vm Vm;

typedef void (*VmStateCallback)(Vm *vm, VmState old_state, VmState new_state, void *userdata);

/* Per-vCPU exit accounting. */
typedef struct VcpuStats {
        uint64_t exits_total;
        uint64_t exits_io;
        uint64_t exits_mmio;
        uint64_t exits_hlt;
        uint64_t exits_intr; /* KVM_RUN interrupted by a signal (pause, throttle) */
        uint64_t exits_other;
} VcpuStats;

/* How the VMM builds a VM, chosen by its front end (the daemon from its environment, tests
 * directly): library code reads no environment. */
typedef struct VmOptions {
        bool dirty_ring; /* track dirty pages with KVM's dirty ring where KVM has it */
        bool thp;        /* transparent huge pages for guest RAM (best effort) */
} VmOptions;

/* The defaults: both on. */
void vm_options_init(VmOptions *ret);

/* Creates a VM in state 'created' from a validated config. Nothing is allocated in KVM
 * until vm_start() or vm_prepare_incoming(). The config is copied. */
int vm_new(const char *name, const VmConfig *config, Vm **ret);
Vm *vm_free(Vm *vm); /* stops the VM first if it runs */
DEFINE_TRIVIAL_CLEANUP_FUNC(Vm *, vm_free);

const char *vm_get_name(const Vm *vm);
VmState vm_get_state(const Vm *vm);
const VmConfig *vm_get_config(const Vm *vm);
/* The console's path: the pty slave in pty mode, the file in file mode, "" otherwise. */
const char *vm_get_console_path(const Vm *vm);
void vm_set_state_callback(Vm *vm, VmStateCallback cb, void *userdata);
/* Takes effect the next time the VM is built (start, incoming). */
void vm_set_options(Vm *vm, const VmOptions *options);

/* created/stopped/crashed -> running: builds the KVM VM, loads the kernel, starts vCPUs.
 * -EBUSY if already running or paused; -EPERM-free: all errors are negative errnos. */
int vm_start(Vm *vm);
/* running -> paused. Signals every vCPU and waits for each to acknowledge. */
int vm_pause(Vm *vm);
/* paused or migration-unknown -> running. */
int vm_resume(Vm *vm);
/* A guest-visible power-off request (ACPI power button: PM1 status bit, SCI on IRQ 9).
 * The guest decides; the state changes when it powers off. running/paused only. */
int vm_request_shutdown(Vm *vm);
/* Immediate stop: running/paused/incoming/migration-unknown -> stopped; frees guest RAM. */
int vm_stop(Vm *vm);

/* A new fd on the console: the pty slave (read/write) in pty mode, the output file
 * (read-only, from its start) in file mode. -ENODEV when the VM has no console. */
int vm_open_console(Vm *vm, int *ret_fd);

int vm_get_event_fd(Vm *vm);
/* Handles pending guest events (power-off, reset, crash); calls the state callback. */
int vm_dispatch_events(Vm *vm);

unsigned vm_get_vcpu_count(const Vm *vm);
int vm_get_vcpu_stats(const Vm *vm, unsigned idx, VcpuStats *ret);

/* A VM that receives a migration: state 'incoming' from the start, no config (so
 * vm_get_config() returns NULL) until vm_incoming_setup() (vm-migration.h) gives it the
 * config the source sent. */
int vm_new_incoming(const char *name, Vm **ret);
