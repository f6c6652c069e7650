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
/* Loads state saved by vm_save_state() into a VM in state 'incoming'; the VM stays
 * stopped until vm_resume_incoming(). Validates every section; -EBADMSG on bad input. */
int vm_restore_state(Vm *vm, const uint8_t *buf, size_t size);
/* incoming (state restored) -> running. */
int vm_resume_incoming(Vm *vm);
/* Sets the state directly for the migration engine: paused -> migrated or
 * migration-unknown (and back to running through vm_resume()). */
int vm_set_migration_state(Vm *vm, VmState state);
