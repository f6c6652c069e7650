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

/* --- Used by save/restore and migration (vmm-internal users and tests). --- */

/* created -> incoming: builds the KVM VM and guest RAM, no kernel, vCPUs not running. */
int vm_prepare_incoming(Vm *vm);
/* Guest RAM: the host mapping of the whole RAM, and its guest-physical layout. */
typedef struct VmMemoryRegion {
        uint64_t gpa;
        uint64_t size;
        uint64_t host_offset; /* from vm_get_ram() base */
} VmMemoryRegion;
int vm_get_ram(Vm *vm, uint8_t **ret_base, uint64_t *ret_size, const VmMemoryRegion **ret_regions,
               unsigned *ret_n);
/* Serializes vCPU, irqchip, PIT, clock and device state (not RAM) while paused. */
int vm_save_state(Vm *vm, uint8_t **ret_buf, size_t *ret_size);
/* The same, telling how long the vCPU part and the machine/device part took (µs). */
int vm_save_state_timed(Vm *vm, uint8_t **ret_buf, size_t *ret_size, uint64_t *ret_vcpu_us,
                        uint64_t *ret_device_us);
/* For the migration's state rehearsal (the job's thread only): the same on a running VM,
 * whose vCPUs are parked for the save alone; the VM's State does not change. A paused
 * VM is saved as it is. *ret_pause_us: how long parking the vCPUs took (0 if paused). */
int vm_save_state_live(Vm *vm, uint8_t **ret_buf, size_t *ret_size, uint64_t *ret_pause_us,
                       uint64_t *ret_vcpu_us, uint64_t *ret_device_us);
/* Applies 'buf' to a VM in state 'incoming' as a trial, then puts back the state the VM
 * had: proves the state loads here and measures it (*ret_apply_us). */
int vm_restore_state_trial(Vm *vm, const uint8_t *buf, size_t size, uint64_t *ret_apply_us);
/* Loads state saved by vm_save_state() into a VM in state 'incoming'; the VM stays
 * stopped until vm_resume_incoming(). Validates every section; -EBADMSG on bad input. */
int vm_restore_state(Vm *vm, const uint8_t *buf, size_t size);
/* Why the last vm_restore_state() refused its input, naming the device or section
 * ("uart: section version 2, this build reads 1"); "" if it did not. */
const char *vm_get_state_error(const Vm *vm);
/* incoming (state restored) -> running. */
int vm_resume_incoming(Vm *vm);
/* Sets the state directly for the migration engine: paused -> migrated or
 * migration-unknown (and back to running through vm_resume()). */
int vm_set_migration_state(Vm *vm, VmState state);

/* A VM that receives a migration: state 'incoming' from the start, no config (so
 * vm_get_config() returns NULL) until vm_incoming_setup() gives it the config the source
 * sent; that builds KVM and guest RAM with vCPUs parked, ready for RAM and
 * vm_restore_state(). */
int vm_new_incoming(const char *name, Vm **ret);
int vm_incoming_setup(Vm *vm, const VmConfig *config);

/* --- Migration jobs --- */

/* While a job is active, the job's thread drives the VM (pause, resume, save state,
 * dirty log) and the owner thread's state-changing calls return -EBUSY; guest events are
 * held back until vm_job_end(). State changes made on the job's thread reach the state
 * callback through vm_dispatch_events() on the owner thread. */
void vm_job_begin(Vm *vm);
void vm_job_end(Vm *vm);
bool vm_job_is_active(const Vm *vm);
/* A vCPU stopped on a fatal exit (triple fault, emulation failure) or the guest powered
 * off or reset while a job held its events back: the job must not send this guest. */
bool vm_has_guest_event(const Vm *vm);
/* What that event was, e.g. "crashed: triple fault (shutdown exit)"; "" if none. */
void vm_get_guest_event(Vm *vm, char *buf, size_t size);
/* Calls the state callback (old == new) to say that other properties changed. */
void vm_notify_changed(Vm *vm);

/* Dirty page tracking for precopy. Bitmaps are indexed by page number in the host
 * mapping (vm_get_ram() base), one bit per 4 KiB page. */
int vm_dirty_log_start(Vm *vm);
/* ORs every page dirtied since the last fetch into 'bitmap' and re-protects them (KVM
 * bitmaps with manual protect, cleared in chunks). Returns how many pages the guest
 * dirtied since the last fetch; *ret_new (if not NULL) gets how many of them were not
 * yet set in 'bitmap'. */
int64_t vm_dirty_log_fetch(Vm *vm, unsigned long *bitmap, uint64_t *ret_new);
int vm_dirty_log_stop(Vm *vm);
/* "dirty-ring" (KVM_CAP_DIRTY_LOG_RING, chosen when KVM has it and VMMD_DIRTY_RING is not
 * "0" when the VM is built) or "bitmap" (KVM_GET_DIRTY_LOG). */
const char *vm_dirty_log_method(const Vm *vm);
/* Writes into guest RAM from the VMM; while dirty logging is on, the pages written are
 * reported by the next vm_dirty_log_fetch() (KVM sees only the guest's own writes). */
int vm_write_guest(Vm *vm, uint64_t gpa, const void *data, uint64_t len);

/* Auto-converge: each vCPU is kicked every 10 ms and then sleeps so that it runs only
 * (100 - percent)% of the time (0 turns it off, at most 99). */
int vm_set_throttle(Vm *vm, unsigned percent);
unsigned vm_get_throttle(const Vm *vm);
