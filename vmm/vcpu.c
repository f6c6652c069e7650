/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "guest-cpu.h"
#include "log.h"
#include "vm-internal.h"

/* The signal that kicks a vCPU out of KVM_RUN. Its handler sets immediate_exit, so a kick
 * that lands just before KVM_RUN is not lost. */

enum { EXIT_TOTAL, EXIT_IO, EXIT_MMIO, EXIT_HLT, EXIT_INTR, EXIT_OTHER };

static __thread struct kvm_run *tls_run;

static void kick_handler(int sig) {
        if (tls_run)
                tls_run->immediate_exit = 1;
        (void)sig;
}

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

static void install_kick_handler(void) {
        struct sigaction sa = { .sa_handler = kick_handler };

        sigemptyset(&sa.sa_mask);
        (void)sigaction(SIG_VCPU_KICK, &sa, NULL);
}

int vcpu_create(struct Vm *vm, unsigned idx) {
        Vcpu *v = &vm->vcpus[idx];
        int mmap_size;

        *v = (Vcpu){ .vm = vm, .idx = idx, .fd = -EBADF };
        v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)idx);
        if (v->fd < 0)
                return negative_errno();
        mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
        if (mmap_size < (int)sizeof(struct kvm_run))
                return mmap_size < 0 ? negative_errno() : -EIO;
        v->run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
        if (v->run == MAP_FAILED) {
                v->run = NULL;
                return negative_errno();
        }
        v->run_size = (size_t)mmap_size;
        return vcpu_map_dirty_ring(v);
}

void vcpu_destroy(Vcpu *v) {
        vcpu_unmap_dirty_ring(v);
        if (v->run)
                munmap(v->run, v->run_size);
        v->run = NULL;
        v->fd = safe_close(v->fd);
}

void vcpu_kick(Vcpu *v) {
        if (v->thread_started)
                (void)pthread_kill(v->thread, SIG_VCPU_KICK);
}

void vm_post_event(struct Vm *vm, int event, const char *reason) {
        uint64_t one = 1;

        if (reason) {
                pthread_mutex_lock(&vm->crash_lock);
                if (!vm->crash_reason[0])
                        snprintf(vm->crash_reason, sizeof vm->crash_reason, "%s", reason);
                pthread_mutex_unlock(&vm->crash_lock);
        }
        atomic_fetch_or(&vm->pending_events, event);
        (void)!write(vm->event_fd, &one, sizeof one);
}

/* Parks this vCPU until the control says run again (or stop). 'halted' vCPUs stay parked
 * until stop, whatever the control. Returns false when the thread should end. */
static bool vcpu_park(Vcpu *v) {
        struct Vm *vm = v->vm;
        bool keep_running;

        pthread_mutex_lock(&vm->run_lock);
        v->parked = true;
        vm->n_parked++;
        pthread_cond_broadcast(&vm->park_cond);
        for (;;) {
                int ctl = atomic_load(&vm->run_control);
                if (ctl == RUN_CONTROL_STOP)
                        break;
                if (ctl == RUN_CONTROL_RUN && !v->halted)
                        break;
                pthread_cond_wait(&vm->run_cond, &vm->run_lock);
        }
        vm->n_parked--;
        v->parked = false;
        keep_running = atomic_load(&vm->run_control) != RUN_CONTROL_STOP;
        pthread_mutex_unlock(&vm->run_lock);
        return keep_running;
}

static void count(Vcpu *v, int which) {
        atomic_fetch_add_explicit(&v->exits[EXIT_TOTAL], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&v->exits[which], 1, memory_order_relaxed);
}

static void handle_io(Vcpu *v) {
        struct kvm_run *run = v->run;
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

        for (uint32_t i = 0; i < run->io.count; i++) {
                (void)pio_bus_dispatch(&v->vm->pio, run->io.port, is_write, data, run->io.size);
                data += run->io.size;
        }
}

static void fatal_exit(Vcpu *v, const char *fmt, ...) _printf_(2, 3);
static void fatal_exit(Vcpu *v, const char *fmt, ...) {
        char buf[200];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        log_debug("vCPU %u: %s", v->idx, buf);
        v->halted = true;
        vm_post_event(v->vm, VM_EVENT_CRASH, buf);
}

/* Returns false if the vCPU cannot go on. */
static bool handle_exit(Vcpu *v) {
        struct kvm_run *run = v->run;

        switch (run->exit_reason) {
        case KVM_EXIT_IO:
                count(v, EXIT_IO);
                handle_io(v);
                v->io_pending = true;
                return true;
        case KVM_EXIT_MMIO:
                count(v, EXIT_MMIO);
                v->io_pending = true;
                /* Nothing lives in MMIO space besides the in-kernel LAPIC/IOAPIC. */
                if (!run->mmio.is_write)
                        memset(run->mmio.data, 0xff, sizeof run->mmio.data);
                return true;
        case KVM_EXIT_HLT:
                count(v, EXIT_HLT);
                return true;
        case KVM_EXIT_INTR:
                count(v, EXIT_INTR);
                return true;
        case KVM_EXIT_DIRTY_RING_FULL:
                count(v, EXIT_OTHER);
                vm_dirty_ring_full(v->vm);
                return true;
        case KVM_EXIT_SHUTDOWN:
                count(v, EXIT_OTHER);
                fatal_exit(v, "triple fault (shutdown exit)");
                return false;
        case KVM_EXIT_SYSTEM_EVENT:
                count(v, EXIT_OTHER);
                if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
                        v->halted = true;
                        vm_post_event(v->vm, VM_EVENT_POWEROFF, NULL);
                } else if (run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
                        v->halted = true;
                        vm_post_event(v->vm, VM_EVENT_RESET, NULL);
                } else
                        fatal_exit(v, "guest crash event %u", run->system_event.type);
                return false;
        case KVM_EXIT_INTERNAL_ERROR: {
                char extra[64] = "";
                count(v, EXIT_OTHER);
                if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && run->internal.ndata > 0)
                        snprintf(extra, sizeof extra, " data0=0x%llx",
                                 (unsigned long long)run->internal.data[0]);
                fatal_exit(v, "KVM internal error, suberror %u%s", run->internal.suberror, extra);
                return false;
        }
        case KVM_EXIT_FAIL_ENTRY:
                count(v, EXIT_OTHER);
                fatal_exit(v, "VM entry failed, reason 0x%llx",
                           (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
                return false;
        default:
                count(v, EXIT_OTHER);
                fatal_exit(v, "unhandled exit reason %u", run->exit_reason);
                return false;
        }
}

static void *vcpu_thread(void *p) {
        Vcpu *v = p;
        struct Vm *vm = v->vm;
        sigset_t set;
        char name[16];

        snprintf(name, sizeof name, "vcpu%u", v->idx);
        (void)pthread_setname_np(pthread_self(), name);

        sigfillset(&set);
        sigdelset(&set, SIG_VCPU_KICK);
        pthread_sigmask(SIG_SETMASK, &set, NULL);
        tls_run = v->run;

        for (;;) {
                v->run->immediate_exit = 0;
                if (atomic_load(&vm->run_control) != RUN_CONTROL_RUN || v->halted) {
                        /* An I/O or MMIO exit is complete (RIP past the instruction, an IN's
                         * value in its register) only after the next KVM_RUN: do that one
                         * with immediate_exit before parking, so state saved while parked
                         * never repeats or loses a device access. */
                        if (v->io_pending && !v->halted) {
                                v->run->immediate_exit = 1;
                                (void)ioctl(v->fd, KVM_RUN, 0);
                                v->run->immediate_exit = 0;
                        }
                        v->io_pending = false;
                        if (!vcpu_park(v))
                                break;
                        continue;
                }
                v->io_pending = false;
                if (ioctl(v->fd, KVM_RUN, 0) < 0) {
                        if (errno == EINTR || errno == EAGAIN) {
                                count(v, EXIT_INTR);
                                vcpu_throttle_sleep(v);
                                continue;
                        }
                        fatal_exit(v, "KVM_RUN failed: %s", strerror(errno));
                        continue;
                }
                (void)handle_exit(v);
        }
        tls_run = NULL;
        return NULL;
}

int vcpu_start_thread(Vcpu *v) {
        sigset_t all, old;
        int r;

        pthread_once(&kick_once, install_kick_handler);
        /* The new thread starts with every signal blocked and unblocks only the kick. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&v->thread, NULL, vcpu_thread, v);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0)
                return -r;
        v->thread_started = true;
        return 0;
}

int vm_get_vcpu_stats(const Vm *vm, unsigned idx, VcpuStats *ret) {
        const Vcpu *v;

        if (!vm->built || idx >= vm->n_vcpus)
                return -ENOENT;
        v = &vm->vcpus[idx];
        *ret = (VcpuStats){
                .exits_total = atomic_load(&v->exits[EXIT_TOTAL]),
                .exits_io = atomic_load(&v->exits[EXIT_IO]),
                .exits_mmio = atomic_load(&v->exits[EXIT_MMIO]),
                .exits_hlt = atomic_load(&v->exits[EXIT_HLT]),
                .exits_intr = atomic_load(&v->exits[EXIT_INTR]),
                .exits_other = atomic_load(&v->exits[EXIT_OTHER]),
        };
        return 0;
}
