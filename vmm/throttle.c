/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Auto-converge: a thread kicks every vCPU once per period while the throttle is on, and
 * each kicked vCPU sleeps its share of the period away. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "time-util.h"
#include "vm-internal.h"

#define THROTTLE_PERIOD_NS (10 * 1000 * 1000)

/* When this vCPU thread last came back from a throttle sleep (CLOCK_MONOTONIC ns). */
static __thread uint64_t tls_throttle_woke_ns;

/* After a kick: sleep so that the vCPU runs (100 - pct)% of the time. It ran 'ran' ns since it
 * last woke (counted as at most one period, which is what the throttle's kick cycle lets it
 * run), so it sleeps ran * pct / (100 - pct) and each run+sleep cycle is (100 - pct)% run,
 * whatever the phase of the kick: 2.5 ms at 20 %, 990 ms at 99 %. The kick signal is blocked
 * except inside ppoll(), which unblocks it atomically: a kick that lands at any point of the
 * sleep (even before it starts) ends the wait at once, and the sleep goes on only if the
 * throttle is still on and the VM is still meant to run (the throttle's own kicks). */
void vcpu_throttle_sleep(Vcpu *v) {
        struct Vm *vm = v->vm;
        sigset_t kick, old;
        uint64_t now, ran, end;
        unsigned pct;

        sigemptyset(&kick);
        sigaddset(&kick, SIG_VCPU_KICK);
        pthread_sigmask(SIG_BLOCK, &kick, &old);
        sigdelset(&old, SIG_VCPU_KICK);
        now = time_monotonic_nsec();
        ran = MIN(now - tls_throttle_woke_ns, (uint64_t)THROTTLE_PERIOD_NS);
        pct = MIN((unsigned)atomic_load(&vm->throttle_pct), 99u);
        end = now + ran * pct / (100 - pct);
        while (pct > 0 && now < end && atomic_load(&vm->run_control) == RUN_CONTROL_RUN) {
                struct timespec ts = { .tv_sec = (time_t)((end - now) / NSEC_PER_SEC),
                                       .tv_nsec = (long)((end - now) % NSEC_PER_SEC) };

                if (ppoll(NULL, 0, &ts, &old) == 0 || errno != EINTR)
                        break;
                pct = (unsigned)atomic_load(&vm->throttle_pct);
                now = time_monotonic_nsec();
        }
        tls_throttle_woke_ns = time_monotonic_nsec();
        pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Kicks every vCPU once per cycle while the throttle is on, and once more when it goes off
 * (or the thread stops), so that no vCPU sleeps on with the throttle at 0. As in QEMU, the
 * cycle is period * 100 / (100 - pct), so a vCPU runs a whole period between kicks and sleeps
 * period * pct / (100 - pct): few wake-ups, each of which costs the guest a little. */
static void *throttle_thread(void *p) {
        struct Vm *vm = p;
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        unsigned armed = UINT_MAX; /* arm on the first iteration, even at 0 % */

        (void)pthread_setname_np(pthread_self(), "throttle");
        if (tfd < 0)
                goto out;
        for (;;) {
                unsigned pct = MIN((unsigned)atomic_load(&vm->throttle_pct), 99u);
                struct pollfd fds[2] = {
                        { .fd = vm->throttle_stop_fd, .events = POLLIN },
                        { .fd = tfd, .events = POLLIN },
                };
                uint64_t n;

                if (pct != armed) {
                        uint64_t cycle = (uint64_t)THROTTLE_PERIOD_NS * 100 / (100 - MAX(pct, 1u));
                        struct itimerspec its = {
                                .it_interval = { .tv_sec = (time_t)(cycle / NSEC_PER_SEC),
                                                 .tv_nsec = (long)(cycle % NSEC_PER_SEC) },
                        };

                        its.it_value = its.it_interval;
                        if (timerfd_settime(tfd, 0, &its, NULL) < 0)
                                break;
                        if (pct == 0) /* off: wake the sleepers now */
                                for (unsigned i = 0; i < vm->n_vcpus; i++)
                                        vcpu_kick(&vm->vcpus[i]);
                        armed = pct;
                }
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
        for (unsigned i = 0; i < vm->n_vcpus; i++)
                vcpu_kick(&vm->vcpus[i]);
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
