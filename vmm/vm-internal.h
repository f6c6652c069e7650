/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <signal.h>

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>

#include "clock.h"
#include "device.h"
#include "memory.h"
#include "pio.h"
#include "pm.h"
#include "uart.h"
#include "vm-migration.h"
#include "vm.h"

/* The signal that kicks a vCPU thread out of KVM_RUN or out of a throttle sleep. */
#define SIG_VCPU_KICK (SIGRTMIN + 3)

#define VM_MAX_SAVED_MSRS 256

/* State section ids (docs/migration.md). 1 is the machine's description (state.c); each
 * other id belongs to one entry of the device table (board.c). */
enum {
        SEC_VMINFO = 1,
        SEC_CLOCK = 2,
        SEC_PIC_MASTER = 3,
        SEC_PIC_SLAVE = 4,
        SEC_IOAPIC = 5,
        SEC_PIT = 6,
        SEC_UART = UART_STATE_SECTION,
        SEC_PM = PM_STATE_SECTION,

        SEC_VCPU_REGS = 16,
        SEC_VCPU_SREGS = 17,
        SEC_VCPU_XSAVE = 18,
        SEC_VCPU_XCRS = 19,
        SEC_VCPU_DEBUGREGS = 20,
        SEC_VCPU_LAPIC = 21,
        SEC_VCPU_MSRS = 22,
        SEC_VCPU_EVENTS = 23,
        SEC_VCPU_MP_STATE = 24,
};

/* The device contracts (device.h) of the machine; board.c puts them in a table. */
extern const DeviceOps clock_device_ops;                                      /* kvmclock.c */
extern const DeviceOps pic_master_device_ops, pic_slave_device_ops, ioapic_device_ops; /* irqchip.c */
extern const DeviceOps lapic_device_ops;                                      /* irqchip.c */
extern const DeviceOps pit_device_ops;                                        /* pit.c */
extern const DeviceOps regs_device_ops, sregs_device_ops, xsave_device_ops, xcrs_device_ops,
        debugregs_device_ops, msrs_device_ops, events_device_ops, mp_state_device_ops; /* cpu-state.c */

typedef enum RunControl {
        RUN_CONTROL_RUN,
        RUN_CONTROL_PAUSE,
        RUN_CONTROL_STOP,
} RunControl;

enum {
        VM_EVENT_POWEROFF = 1 << 0,
        VM_EVENT_RESET = 1 << 1,
        VM_EVENT_CRASH = 1 << 2,
        VM_EVENT_STATE = 1 << 3, /* a state change made on another thread */
        VM_EVENT_GUEST_MASK = VM_EVENT_POWEROFF | VM_EVENT_RESET | VM_EVENT_CRASH,
};

typedef struct Vcpu {
        struct Vm *vm;
        unsigned idx;
        int fd;
        struct kvm_run *run;
        size_t run_size;
        pthread_t thread;
        bool thread_started;
        bool parked;  /* guarded by vm->run_lock */
        bool halted;  /* stopped by a fatal exit until the owner acts */
        bool io_pending; /* the last exit was I/O or MMIO, not yet completed by KVM_RUN */
        struct kvm_dirty_gfn *ring; /* KVM's dirty ring for this vCPU, NULL without one */
        uint32_t ring_fetch;        /* next entry to collect, guarded by vm->dirty_lock */
        _Atomic uint64_t exits[6]; /* indexes as in VcpuStats */
} Vcpu;

struct Vm {
        char *name;
        VmConfig *config; /* NULL for an incoming VM until its config arrives */
        _Atomic int state;
        pthread_t owner;         /* the thread that created the VM and gets callbacks */
        _Atomic int job_active;  /* a migration job drives the VM from its own thread */
        _Atomic int notify_old;  /* state before an off-owner change, -1 if none pending */
        _Atomic int throttle_pct;
        pthread_t throttle_thread;
        bool throttle_thread_started;
        int throttle_stop_fd;
        /* Dirty tracking (dirty-log.c), guarded by dirty_lock. */
        pthread_mutex_t dirty_lock;
        bool dirty_logging;
        uint32_t dirty_ring_entries; /* per vCPU; 0: KVM's bitmaps are used */
        bool manual_protect, manual_protect_checked;
        unsigned long *slot_bitmap[GUEST_MAX_REGIONS]; /* KVM_GET_DIRTY_LOG buffers */
        unsigned long *dirty_pending; /* dirtied, not yet fetched; host page numbering */
        VmOptions options;
        VmStateCallback state_cb;
        void *state_cb_userdata;

        /* KVM objects: valid while 'built'. */
        bool built;
        int kvm_fd;
        int vm_fd;
        GuestMemory mem;
        unsigned n_vcpus;
        Vcpu *vcpus;
        struct kvm_cpuid2 *cpuid;
        uint32_t *msr_indices; /* MSRs that save/restore carries */
        unsigned n_msrs;
        size_t xsave_size;

        PioBus pio;
        Uart uart;
        Pm pm;
        Device *devices; /* the device table (board.c), valid while 'built' */
        unsigned n_devices;
        char state_error[256]; /* why the last vm_restore_state() refused its input */
        /* clock.c: the clock as read by the last save (the TSCs are recorded as of that
         * instant), and the restore in progress (kvmclock and TSCs set in step). */
        struct kvm_clock_data saved_clock;
        bool saved_clock_valid;
        VmClockRestore clock_restore;
        bool clock_restore_active;

        /* Run control, shared with vCPU threads. */
        pthread_mutex_t run_lock;
        pthread_cond_t run_cond;  /* vCPUs wait here while parked */
        pthread_cond_t park_cond; /* the owner waits here for acknowledgements */
        _Atomic int run_control;
        unsigned n_parked; /* guarded by run_lock */

        /* Guest events for the owner thread. */
        int event_fd;
        _Atomic int pending_events;
        pthread_mutex_t crash_lock;
        char crash_reason[256]; /* guarded by crash_lock */

        /* Console. */
        int console_fd;       /* pty master, or the output file */
        int console_slave_fd; /* held open so the pty never hangs up */
        char *console_path;
        int console_stop_fd;
        int console_space_fd; /* the UART's FIFO has room again */
        pthread_t console_thread;
        bool console_thread_started;
        pthread_mutex_t irq_lock; /* serializes IRQ injection from the console thread with
                                     closing the VM fd */
};

/* vcpu.c */
int vcpu_create(struct Vm *vm, unsigned idx);
void vcpu_destroy(Vcpu *v);
int vcpu_start_thread(Vcpu *v);
void vcpu_kick(Vcpu *v);
void vm_post_event(struct Vm *vm, int event, const char *reason);
/* Parks every vCPU thread (RUN_CONTROL_PAUSE, kick, wait); run control RUN lets them go. */
void vm_pause_vcpus(struct Vm *vm);
void vm_set_run_control(struct Vm *vm, RunControl c);
/* vm_save_state_timed() without the state check: the caller has the vCPUs parked. */
int vm_save_state_parked(struct Vm *vm, uint8_t **ret_buf, size_t *ret_size, uint64_t *ret_vcpu_us,
                         uint64_t *ret_device_us);

/* state.c: matches the sections of 'buf' to the device table and checks each (nothing is
 * applied, no KVM call); ret_sections has vm->n_devices entries. -EBADMSG with a message
 * naming the device or section in 'err'. */
int vm_state_parse(const struct Vm *vm, const uint8_t *buf, size_t size, StateSection *ret_sections,
                   char *err, size_t err_size);

/* dirty-log.c */
int vm_dirty_ring_setup(struct Vm *vm); /* before the first vCPU: 1 if the ring is on */
int vcpu_map_dirty_ring(Vcpu *v);
void vcpu_unmap_dirty_ring(Vcpu *v);
void vm_dirty_ring_full(struct Vm *vm); /* a vCPU's ring is full: collect them all */

/* x86-cpu.c */
int x86_get_supported_cpuid(struct Vm *vm); /* into vm->cpuid */
int x86_probe_msrs(struct Vm *vm);          /* vm->msr_indices: what saved state carries */
int vcpu_init_cpu_state(Vcpu *v);           /* CPUID, MSRs, LAPIC LINT0/LINT1 */

/* console.c */
int vm_console_open(struct Vm *vm); /* from vm->config; starts the input thread for a pty */
void vm_console_close(struct Vm *vm);
void vm_console_output(void *vm, const uint8_t *buf, size_t n); /* the UART's output */
void vm_console_rx_space(void *vm); /* the UART's receive FIFO has room again */

/* throttle.c: auto-converge */
void vm_throttle_stop(struct Vm *vm);
void vcpu_throttle_sleep(Vcpu *v);

/* board.c */
void vm_set_irq_line(struct Vm *vm, unsigned irq, int level);
/* The port devices (UART, PM) wired to their IRQ lines and the console; at vm_new(). */
void board_init(struct Vm *vm);
void board_done(struct Vm *vm);
/* The device table of a machine with vm->n_vcpus vCPUs (those need not be built): the
 * machine's devices, then each vCPU's, in the order their sections are saved. */
int board_init_devices(struct Vm *vm);
void board_free_devices(struct Vm *vm);
/* Registers the port devices on the PIO bus. */
int board_register_pio(struct Vm *vm);
/* Puts every device in its power-on state. */
void board_reset_devices(struct Vm *vm);
