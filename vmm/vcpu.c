/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "guest-cpu.h"
#include "log.h"
#include "vm-internal.h"

/* The signal that kicks a vCPU out of KVM_RUN. Its handler sets immediate_exit, so a kick
 * that lands just before KVM_RUN is not lost. */
#define SIG_VCPU_KICK (SIGRTMIN + 3)

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

/* --- auto-converge --- */

#define THROTTLE_PERIOD_NS (10 * 1000 * 1000)

/* After a kick: sleep so that the vCPU runs (100 - pct)% of the time. It has just run
 * for up to one period (10 ms), so it sleeps period * pct / (100 - pct): 2.5 ms at 20 %,
 * 990 ms at 99 %. Long sleeps keep the throttle exact even where a kick takes a while to
 * land. A pause request still wins: kicks interrupt the sleep and it ends early. */
void vcpu_throttle_sleep(Vcpu *v) {
        unsigned pct = MIN((unsigned)atomic_load(&v->vm->throttle_pct), 99u);
        uint64_t ns;
        struct timespec ts;

        if (pct == 0 || atomic_load(&v->vm->run_control) != RUN_CONTROL_RUN)
                return;
        ns = (uint64_t)THROTTLE_PERIOD_NS * pct / (100 - pct);
        ts = (struct timespec){ .tv_sec = (time_t)(ns / NSEC_PER_SEC), .tv_nsec = (long)(ns % NSEC_PER_SEC) };
        while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
                if (atomic_load(&v->vm->run_control) != RUN_CONTROL_RUN ||
                    atomic_load(&v->vm->throttle_pct) == 0)
                        break;
}

/* Kicks every vCPU once per period while the throttle is on. */
static void *throttle_thread(void *p) {
        struct Vm *vm = p;
        struct itimerspec its = {
                .it_interval.tv_nsec = THROTTLE_PERIOD_NS,
                .it_value.tv_nsec = THROTTLE_PERIOD_NS,
        };
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

        (void)pthread_setname_np(pthread_self(), "throttle");
        if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0)
                goto out;
        for (;;) {
                struct pollfd fds[2] = {
                        { .fd = vm->throttle_stop_fd, .events = POLLIN },
                        { .fd = tfd, .events = POLLIN },
                };
                uint64_t n;

                if (poll(fds, 2, -1) < 0 && errno != EINTR)
                        break;
                if (fds[0].revents)
                        break;
                if (fds[1].revents & POLLIN) {
                        (void)!read(tfd, &n, sizeof n);
                        if (atomic_load(&vm->throttle_pct) > 0 &&
                            atomic_load(&vm->run_control) == RUN_CONTROL_RUN)
                                for (unsigned i = 0; i < vm->n_vcpus; i++)
                                        vcpu_kick(&vm->vcpus[i]);
                }
        }
out:
        safe_close(tfd);
        return NULL;
}

int vm_set_throttle(struct Vm *vm, unsigned percent) {
        sigset_t all, old;
        int r;

        if (percent > 99)
                return -EINVAL;
        if (!vm->built)
                return -ESTALE;
        atomic_store(&vm->throttle_pct, (int)percent);
        if (percent == 0 || vm->throttle_thread_started)
                return 0;
        vm->throttle_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (vm->throttle_stop_fd < 0)
                return negative_errno();
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&vm->throttle_thread, NULL, throttle_thread, vm);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0) {
                vm->throttle_stop_fd = safe_close(vm->throttle_stop_fd);
                return -r;
        }
        vm->throttle_thread_started = true;
        return 0;
}

unsigned vm_get_throttle(const struct Vm *vm) {
        return (unsigned)atomic_load(&vm->throttle_pct);
}

void vm_throttle_stop(struct Vm *vm) {
        uint64_t one = 1;

        atomic_store(&vm->throttle_pct, 0);
        if (!vm->throttle_thread_started)
                return;
        (void)!write(vm->throttle_stop_fd, &one, sizeof one);
        pthread_join(vm->throttle_thread, NULL);
        vm->throttle_thread_started = false;
        vm->throttle_stop_fd = safe_close(vm->throttle_stop_fd);
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

static int set_cpuid(Vcpu *v) {
        const struct kvm_cpuid2 *src = v->vm->cpuid;
        size_t sz = sizeof(*src) + src->nent * sizeof(src->entries[0]);
        _cleanup_free_ struct kvm_cpuid2 *c = malloc(sz);

        if (!c)
                return -ENOMEM;
        memcpy(c, src, sz);
        for (uint32_t i = 0; i < c->nent; i++) {
                struct kvm_cpuid_entry2 *e = &c->entries[i];
                switch (e->function) {
                case 1:
                        /* Initial APIC id and logical processor count. */
                        e->ebx = (e->ebx & 0x0000ffff) | (v->vm->n_vcpus & 0xff) << 16 | v->idx << 24;
                        if (v->vm->n_vcpus > 1)
                                e->edx |= 1u << 28; /* HTT */
                        /* KVM does not report the hypervisor bit; guests look for the
                         * KVM leaves at 0x40000000 only when it is set. */
                        e->ecx |= 1u << 31;
                        break;
                case 0xb:
                case 0x1f:
                        e->edx = v->idx; /* x2APIC id */
                        break;
                default:
                        break;
                }
        }
        if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
                return negative_errno();
        return 0;
}

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_EXTINT 0x700
#define APIC_MODE_NMI 0x400

static int set_initial_msrs(Vcpu *v) {
        struct {
                struct kvm_msrs h;
                struct kvm_msr_entry e[2];
        } m = {
                .h.nmsrs = 2,
                .e = {
                        { .index = MSR_IA32_MISC_ENABLE, .data = 1 }, /* fast strings */
                        { .index = MSR_MTRR_DEF_TYPE, .data = (1u << 11) | 6 }, /* enabled, WB */
                },
        };
        /* Best effort: a KVM that refuses one of them still boots our guests. */
        if (ioctl(v->fd, KVM_SET_MSRS, &m) < 0)
                return negative_errno();
        return 0;
}

static int set_lint(Vcpu *v) {
        struct kvm_lapic_state l;
        uint32_t reg;

        if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0)
                return negative_errno();
        /* The 8259 reaches the boot CPU through LINT0 as ExtINT; NMIs come in on LINT1. */
        memcpy(&reg, l.regs + APIC_LVT0, 4);
        reg = (reg & ~0x1e700u & ~(1u << 16)) | APIC_MODE_EXTINT;
        memcpy(l.regs + APIC_LVT0, &reg, 4);
        memcpy(&reg, l.regs + APIC_LVT1, 4);
        reg = (reg & ~0x1e700u & ~(1u << 16)) | APIC_MODE_NMI;
        memcpy(l.regs + APIC_LVT1, &reg, 4);
        if (ioctl(v->fd, KVM_SET_LAPIC, &l) < 0)
                return negative_errno();
        return 0;
}

int vcpu_init_cpu_state(Vcpu *v) {
        int r;

        r = set_cpuid(v);
        if (r < 0)
                return r;
        (void)set_initial_msrs(v);
        r = set_lint(v);
        if (r < 0)
                return r;
        return guest_cpu_reset(v); /* guest-cpu.c: XCR0; APs wait for INIT/SIPI */
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
