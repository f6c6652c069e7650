/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The calls of the VM object that the migration engine (migration/) uses, and tests of
 * save/restore: saving and loading state, guest RAM, jobs, dirty tracking, the throttle.
 * Front ends (daemon/, dbus/, cli/) need only vm.h. */

#include "vm.h"

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
/* Why the last vm_restore_state() or vm_restore_state_trial() refused its input, naming the device or section
 * ("uart: section version 2, this build reads 1"); "" if it did not. */
const char *vm_get_state_error(const Vm *vm);
/* incoming (state restored) -> running. */
int vm_resume_incoming(Vm *vm);
/* Sets the state directly for the migration engine: paused -> migrated or
 * migration-unknown (and back to running through vm_resume()). */
int vm_set_migration_state(Vm *vm, VmState state);

/* Gives a VM of vm_new_incoming() the config the source sent; that builds KVM and guest
 * RAM with vCPUs parked, ready for RAM and vm_restore_state(). */
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
/* "dirty-ring" (KVM_CAP_DIRTY_LOG_RING, chosen when KVM has it and VmOptions.dirty_ring
 * was on when the VM was built) or "bitmap" (KVM_GET_DIRTY_LOG). */
const char *vm_dirty_log_method(const Vm *vm);
/* Writes into guest RAM from the VMM; while dirty logging is on, the pages written are
 * reported by the next vm_dirty_log_fetch() (KVM sees only the guest's own writes). */
int vm_write_guest(Vm *vm, uint64_t gpa, const void *data, uint64_t len);

/* Auto-converge: each vCPU is kicked every 10 ms and then sleeps so that it runs only
 * (100 - percent)% of the time (0 turns it off, at most 99). */
int vm_set_throttle(Vm *vm, unsigned percent);
unsigned vm_get_throttle(const Vm *vm);
