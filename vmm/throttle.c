/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Auto-converge: a thread kicks every vCPU once per period while the throttle is on, and
 * each kicked vCPU sleeps its share of the period away. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "vm-internal.h"

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
