/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "boot.h"
#include "log.h"
#include "vm-internal.h"

#define KVM_DEVICE "/dev/kvm"
#define KVM_TSS_ADDR 0xfffbd000
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000

static const char *const state_table[_VM_STATE_MAX] = {
        [VM_STATE_CREATED] = "created",
        [VM_STATE_RUNNING] = "running",
        [VM_STATE_PAUSED] = "paused",
        [VM_STATE_INCOMING] = "incoming",
        [VM_STATE_MIGRATED] = "migrated",
        [VM_STATE_MIGRATION_UNKNOWN] = "migration-unknown",
        [VM_STATE_STOPPED] = "stopped",
        [VM_STATE_CRASHED] = "crashed",
};

const char *vm_state_to_string(VmState s) {
        return s >= 0 && s < _VM_STATE_MAX ? state_table[s] : NULL;
}

VmState vm_state_from_string(const char *s) {
        for (int i = 0; i < _VM_STATE_MAX; i++)
                if (s && strcmp(s, state_table[i]) == 0)
                        return (VmState)i;
        return _VM_STATE_INVALID;
}

static bool on_owner_thread(const Vm *vm) {
        return pthread_equal(pthread_self(), vm->owner);
}

/* Callbacks run on the owner thread only: a change made elsewhere (the migration thread)
 * is announced through the event fd and reported by vm_dispatch_events(). */
static void notify(Vm *vm, VmState old, VmState s) {
        if (on_owner_thread(vm)) {
                if (vm->state_cb)
                        vm->state_cb(vm, old, s, vm->state_cb_userdata);
                return;
        }
        int expected = -1;
        (void)atomic_compare_exchange_strong(&vm->notify_old, &expected, (int)old);
        vm_post_event(vm, VM_EVENT_STATE, NULL);
}

static void set_state(Vm *vm, VmState s) {
        VmState old = atomic_exchange(&vm->state, s);

        if (old == s)
                return;
        log_debug("VM %s: %s -> %s", vm->name, vm_state_to_string(old), vm_state_to_string(s));
        notify(vm, old, s);
}

/* Public calls that change state are refused on the owner thread while a migration job
 * drives the VM. */
static bool busy(const Vm *vm) {
        return atomic_load(&vm->job_active) && on_owner_thread(vm);
}

void vm_job_begin(Vm *vm) {
        atomic_store(&vm->job_active, 1);
}

void vm_job_end(Vm *vm) {
        uint64_t one = 1;

        atomic_store(&vm->job_active, 0);
        /* Guest events held back during the job are handled now. */
        if (atomic_load(&vm->pending_events))
                (void)!write(vm->event_fd, &one, sizeof one);
}

bool vm_has_guest_event(const Vm *vm) {
        return (atomic_load(&vm->pending_events) & VM_EVENT_GUEST_MASK) != 0;
}

void vm_get_guest_event(Vm *vm, char *buf, size_t size) {
        int ev = atomic_load(&vm->pending_events) & VM_EVENT_GUEST_MASK;

        if (size == 0)
                return;
        buf[0] = 0;
        if (ev & VM_EVENT_CRASH) {
                pthread_mutex_lock(&vm->crash_lock);
                snprintf(buf, size, "crashed: %s", vm->crash_reason);
                pthread_mutex_unlock(&vm->crash_lock);
        } else if (ev & VM_EVENT_POWEROFF)
                snprintf(buf, size, "powered off");
        else if (ev & VM_EVENT_RESET)
                snprintf(buf, size, "reset");
}

bool vm_job_is_active(const Vm *vm) {
        return atomic_load(&vm->job_active);
}

void vm_notify_changed(Vm *vm) {
        VmState s = vm_get_state(vm);
        notify(vm, s, s);
}

void vm_set_irq_line(Vm *vm, unsigned irq, int level) {
        struct kvm_irq_level l = { .irq = irq, .level = level > 0 };

        if (vm->vm_fd >= 0)
                (void)ioctl(vm->vm_fd, KVM_IRQ_LINE, &l);
}

static void uart_set_irq(void *opaque, int level) {
        vm_set_irq_line(opaque, UART_COM1_IRQ, level);
}

static void pm_set_irq(void *opaque, int level) {
        vm_set_irq_line(opaque, PM_SCI_IRQ, level);
}

static void uart_output(void *opaque, const uint8_t *buf, size_t n) {
        Vm *vm = opaque;

        if (vm->console_fd < 0)
                return;
        /* The pty is non-blocking: with nobody reading, output is dropped, never stalls. */
        while (n > 0) {
                ssize_t w = write(vm->console_fd, buf, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return;
                }
                buf += w;
                n -= (size_t)w;
        }
}

static void console_rx_space(void *opaque) {
        Vm *vm = opaque;
        uint64_t one = 1;

        if (vm->console_space_fd >= 0)
                (void)!write(vm->console_space_fd, &one, sizeof one);
}

static void pm_event(void *opaque, PmEvent e) {
        Vm *vm = opaque;

        vm_post_event(vm, e == PM_EVENT_POWEROFF ? VM_EVENT_POWEROFF : VM_EVENT_RESET, NULL);
}

/* --- console --- */

static void *console_thread(void *p) {
        Vm *vm = p;
        bool want_input = true;

        (void)pthread_setname_np(pthread_self(), "console");
        for (;;) {
                struct pollfd fds[3] = {
                        { .fd = vm->console_stop_fd, .events = POLLIN },
                        { .fd = vm->console_space_fd, .events = POLLIN },
                        { .fd = want_input ? vm->console_fd : -1, .events = POLLIN },
                };
                uint8_t buf[UART_FIFO_SIZE];
                uint64_t v;

                if (poll(fds, 3, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (fds[0].revents)
                        break;
                if (fds[1].revents) {
                        (void)!read(vm->console_space_fd, &v, sizeof v);
                        want_input = true;
                }
                if (fds[2].revents & POLLIN) {
                        size_t space = uart_rx_space(&vm->uart);
                        ssize_t n;

                        if (space == 0) {
                                want_input = false; /* wait until the guest drains the FIFO */
                                continue;
                        }
                        n = read(vm->console_fd, buf, space);
                        if (n > 0) {
                                pthread_mutex_lock(&vm->irq_lock);
                                (void)uart_receive(&vm->uart, buf, (size_t)n);
                                pthread_mutex_unlock(&vm->irq_lock);
                        }
                } else if (fds[2].revents & (POLLHUP | POLLERR))
                        want_input = false;
        }
        return NULL;
}

static int console_open(Vm *vm) {
        const VmConfig *c = vm->config;

        if (c->serial_mode == SERIAL_MODE_FILE) {
                vm->console_fd = open(c->serial_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW,
                                      0640);
                if (vm->console_fd < 0)
                        return negative_errno();
                vm->console_path = strdup(c->serial_path);
                return vm->console_path ? 0 : -ENOMEM;
        }
        if (c->serial_mode == SERIAL_MODE_PTY) {
                char path[128];
                struct termios t;
                int r;

                vm->console_fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
                if (vm->console_fd < 0)
                        return negative_errno();
                if (grantpt(vm->console_fd) < 0 || unlockpt(vm->console_fd) < 0 ||
                    ptsname_r(vm->console_fd, path, sizeof path) != 0)
                        return negative_errno();
                if (tcgetattr(vm->console_fd, &t) == 0) {
                        cfmakeraw(&t);
                        (void)tcsetattr(vm->console_fd, TCSANOW, &t);
                }
                vm->console_slave_fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (vm->console_slave_fd < 0)
                        return negative_errno();
                vm->console_path = strdup(path);
                if (!vm->console_path)
                        return -ENOMEM;

                vm->console_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                vm->console_space_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (vm->console_stop_fd < 0 || vm->console_space_fd < 0)
                        return negative_errno();
                r = pthread_create(&vm->console_thread, NULL, console_thread, vm);
                if (r != 0)
                        return -r;
                vm->console_thread_started = true;
                return 0;
        }
        vm->console_path = strdup("");
        return vm->console_path ? 0 : -ENOMEM;
}

static void console_close(Vm *vm) {
        if (vm->console_thread_started) {
                uint64_t one = 1;
                (void)!write(vm->console_stop_fd, &one, sizeof one);
                pthread_join(vm->console_thread, NULL);
                vm->console_thread_started = false;
        }
        vm->console_stop_fd = safe_close(vm->console_stop_fd);
        vm->console_space_fd = safe_close(vm->console_space_fd);
        vm->console_slave_fd = safe_close(vm->console_slave_fd);
        vm->console_fd = safe_close(vm->console_fd);
        free(vm->console_path);
        vm->console_path = NULL;
}

int vm_open_console(Vm *vm, int *ret_fd) {
        int fd;

        if (!vm->config || !vm->console_path)
                return -ENODEV;
        switch (vm->config->serial_mode) {
        case SERIAL_MODE_PTY:
                fd = open(vm->console_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
                break;
        case SERIAL_MODE_FILE:
                fd = open(vm->console_path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
                break;
        default:
                return -ENODEV;
        }
        if (fd < 0)
                return negative_errno();
        *ret_fd = fd;
        return 0;
}

/* --- object --- */

static int vm_alloc(const char *name, VmState state, Vm **ret) {
        _cleanup_(vm_freep) Vm *vm = NULL;

        if (!name)
                return -EINVAL;
        vm = calloc(1, sizeof *vm);
        if (!vm)
                return -ENOMEM;
        vm->kvm_fd = vm->vm_fd = vm->event_fd = -EBADF;
        vm->console_fd = vm->console_slave_fd = vm->console_stop_fd = vm->console_space_fd = -EBADF;
        vm->throttle_stop_fd = -EBADF;
        pthread_mutex_init(&vm->run_lock, NULL);
        pthread_cond_init(&vm->run_cond, NULL);
        pthread_cond_init(&vm->park_cond, NULL);
        pthread_mutex_init(&vm->crash_lock, NULL);
        pthread_mutex_init(&vm->irq_lock, NULL);
        pthread_mutex_init(&vm->dirty_lock, NULL);
        uart_init(&vm->uart, uart_set_irq, uart_output, vm);
        vm->uart.rx_space = console_rx_space;
        pm_init(&vm->pm, pm_set_irq, pm_event, vm);
        vm->state = state;
        vm->owner = pthread_self();
        vm->notify_old = -1;

        vm->name = strdup(name);
        if (!vm->name)
                return -ENOMEM;
        vm->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (vm->event_fd < 0)
                return negative_errno();
        *ret = TAKE_PTR(vm);
        return 0;
}

/* Gives the VM its (copied) config and opens its console. */
static int vm_take_config(Vm *vm, const VmConfig *config) {
        VmConfig *c;
        int r;

        r = vm_config_copy(config, &c);
        if (r < 0)
                return r;
        vm->config = c;
        r = console_open(vm);
        if (r < 0) {
                console_close(vm);
                vm->config = vm_config_free(vm->config);
        }
        return r;
}

int vm_new(const char *name, const VmConfig *config, Vm **ret) {
        _cleanup_(vm_freep) Vm *vm = NULL;
        int r;

        if (!config)
                return -EINVAL;
        r = vm_alloc(name, VM_STATE_CREATED, &vm);
        if (r < 0)
                return r;
        r = vm_take_config(vm, config);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(vm);
        return 0;
}

int vm_new_incoming(const char *name, Vm **ret) {
        return vm_alloc(name, VM_STATE_INCOMING, ret);
}

const char *vm_get_name(const Vm *vm) {
        return vm->name;
}

VmState vm_get_state(const Vm *vm) {
        return atomic_load(&vm->state);
}

const VmConfig *vm_get_config(const Vm *vm) {
        return vm->config;
}

const char *vm_get_console_path(const Vm *vm) {
        return vm->console_path ? vm->console_path : "";
}

void vm_set_state_callback(Vm *vm, VmStateCallback cb, void *userdata) {
        vm->state_cb = cb;
        vm->state_cb_userdata = userdata;
}

int vm_get_event_fd(Vm *vm) {
        return vm->event_fd;
}

unsigned vm_get_vcpu_count(const Vm *vm) {
        return vm->config ? vm->config->vcpus : 0;
}

/* --- building and tearing down the KVM VM --- */

static void vm_stop_threads(Vm *vm) {
        pthread_mutex_lock(&vm->run_lock);
        atomic_store(&vm->run_control, RUN_CONTROL_STOP);
        pthread_cond_broadcast(&vm->run_cond);
        pthread_mutex_unlock(&vm->run_lock);
        for (unsigned i = 0; i < vm->n_vcpus; i++)
                vcpu_kick(&vm->vcpus[i]);
        for (unsigned i = 0; i < vm->n_vcpus; i++)
                if (vm->vcpus[i].thread_started) {
                        pthread_join(vm->vcpus[i].thread, NULL);
                        vm->vcpus[i].thread_started = false;
                }
}

static void vm_teardown(Vm *vm) {
        vm_throttle_stop(vm);
        (void)vm_dirty_log_stop(vm);
        vm_stop_threads(vm);
        for (unsigned i = 0; vm->vcpus && i < vm->n_vcpus; i++)
                vcpu_destroy(&vm->vcpus[i]);
        free(vm->vcpus);
        vm->vcpus = NULL;
        vm->n_vcpus = 0;
        free(vm->cpuid);
        vm->cpuid = NULL;
        free(vm->msr_indices);
        vm->msr_indices = NULL;
        vm->n_msrs = 0;

        pthread_mutex_lock(&vm->irq_lock);
        vm->vm_fd = safe_close(vm->vm_fd);
        pthread_mutex_unlock(&vm->irq_lock);
        vm->kvm_fd = safe_close(vm->kvm_fd);
        vm->dirty_ring_entries = 0;
        vm->manual_protect = vm->manual_protect_checked = false;
        guest_memory_release(&vm->mem);
        vm->pio.n = 0;
        vm->built = false;
        atomic_store(&vm->pending_events, 0);
        pthread_mutex_lock(&vm->crash_lock);
        vm->crash_reason[0] = 0;
        pthread_mutex_unlock(&vm->crash_lock);
}

static int get_supported_cpuid(Vm *vm) {
        for (uint32_t n = 64; n <= 4096; n *= 2) {
                struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
                if (!c)
                        return -ENOMEM;
                c->nent = n;
                if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
                        vm->cpuid = c;
                        return 0;
                }
                free(c);
                if (errno != E2BIG)
                        return negative_errno();
        }
        return -E2BIG;
}

/* The MSRs save/restore carries: those of KVM_GET_MSR_INDEX_LIST this vCPU can read. */
static int probe_msrs(Vm *vm) {
        struct kvm_msr_list probe = { .nmsrs = 0 };
        _cleanup_free_ struct kvm_msr_list *list = NULL;

        if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
                return negative_errno();
        if (probe.nmsrs == 0 || probe.nmsrs > 4096)
                return -EIO;
        list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
        if (!list)
                return -ENOMEM;
        list->nmsrs = probe.nmsrs;
        if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0)
                return negative_errno();

        vm->msr_indices = calloc(MIN(list->nmsrs, VM_MAX_SAVED_MSRS), sizeof(uint32_t));
        if (!vm->msr_indices)
                return -ENOMEM;
        for (uint32_t i = 0; i < list->nmsrs && vm->n_msrs < VM_MAX_SAVED_MSRS; i++) {
                struct {
                        struct kvm_msrs h;
                        struct kvm_msr_entry e;
                } m = { .h.nmsrs = 1, .e.index = list->indices[i] };
                if (ioctl(vm->vcpus[0].fd, KVM_GET_MSRS, &m) == 1)
                        vm->msr_indices[vm->n_msrs++] = list->indices[i];
        }
        return 0;
}

static int vm_build(Vm *vm) {
        uint64_t mem_bytes = vm->config->memory_mib * MiB;
        int r;


        if (vm->built)
                return -EBUSY;

        vm->kvm_fd = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);
        if (vm->kvm_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
                r = -EPROTONOSUPPORT;
                goto fail;
        }
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) <= 0 ||
            ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0 ||
            ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_PIT2) <= 0) {
                r = -EOPNOTSUPP;
                goto fail;
        }

        vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
        if (vm->vm_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        (void)fcntl(vm->vm_fd, F_SETFD, FD_CLOEXEC);

        r = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
        vm->xsave_size = r > (int)sizeof(struct kvm_xsave) ? (size_t)r : sizeof(struct kvm_xsave);

        if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0) {
                r = negative_errno();
                goto fail;
        }
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
                uint64_t a = KVM_IDENTITY_MAP_ADDR;
                (void)ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &a);
        }
        if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
                r = negative_errno();
                goto fail;
        }
        struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
        if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
                r = negative_errno();
                goto fail;
        }

        r = guest_memory_alloc(mem_bytes, &vm->mem);
        if (r < 0)
                goto fail;
        r = guest_memory_register(&vm->mem, vm->vm_fd, 0);
        if (r < 0)
                goto fail;

        r = get_supported_cpuid(vm);
        if (r < 0)
                goto fail;

        /* The dirty ring, if KVM has it, must be on before the first vCPU exists. */
        r = vm_dirty_ring_setup(vm);
        if (r > 0)
                log_debug("%s: dirty tracking with KVM's dirty ring, %u entries per vCPU", vm->name,
                          vm->dirty_ring_entries);

        vm->vcpus = calloc(vm->config->vcpus, sizeof(Vcpu));
        if (!vm->vcpus) {
                r = -ENOMEM;
                goto fail;
        }
        for (unsigned i = 0; i < vm->config->vcpus; i++) {
                vm->n_vcpus = i + 1;
                r = vcpu_create(vm, i);
                if (r < 0)
                        goto fail;
        }
        for (unsigned i = 0; i < vm->n_vcpus; i++) {
                r = vcpu_init_cpu_state(&vm->vcpus[i]);
                if (r < 0)
                        goto fail;
        }
        r = probe_msrs(vm);
        if (r < 0)
                goto fail;

        r = pio_bus_register(&vm->pio, UART_COM1_BASE, 8, &uart_pio_ops, &vm->uart);
        if (r >= 0)
                r = pio_bus_register(&vm->pio, PM_BASE, PM_LEN, &pm_pio_ops, &vm->pm);
        if (r >= 0)
                r = pio_bus_register(&vm->pio, PM_RESET_PORT, 1, &pm_reset_pio_ops, &vm->pm);
        if (r < 0)
                goto fail;

        /* Fresh device state for a fresh machine. */
        UartState us;
        uart_get_state(&vm->uart, &us);
        us.rx_count = 0;
        us.ier = 0;
        us.thr_ipending = 0;
        (void)uart_set_state(&vm->uart, &us);
        pm_set_state(&vm->pm, &(PmState){});

        atomic_store(&vm->run_control, RUN_CONTROL_PAUSE);
        vm->n_parked = 0;
        vm->built = true;
        return 0;
fail:
        vm_teardown(vm);
        return r;
}

static int vm_start_threads(Vm *vm) {
        int r;

        for (unsigned i = 0; i < vm->n_vcpus; i++) {
                r = vcpu_start_thread(&vm->vcpus[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Waits until every vCPU thread is parked. */
static void vm_wait_parked(Vm *vm) {
        pthread_mutex_lock(&vm->run_lock);
        while (vm->n_parked < vm->n_vcpus)
                pthread_cond_wait(&vm->park_cond, &vm->run_lock);
        pthread_mutex_unlock(&vm->run_lock);
}

void vm_set_run_control(Vm *vm, RunControl c) {
        pthread_mutex_lock(&vm->run_lock);
        atomic_store(&vm->run_control, c);
        pthread_cond_broadcast(&vm->run_cond);
        pthread_mutex_unlock(&vm->run_lock);
}

/* KVM VM, RAM and vCPU threads, every thread parked; torn down again on failure. */
static int vm_build_parked(Vm *vm) {
        int r;

        r = vm_build(vm);
        if (r < 0)
                return r;
        r = vm_start_threads(vm);
        if (r < 0) {
                vm_teardown(vm);
                return r;
        }
        vm_wait_parked(vm);
        return 0;
}

static int vm_boot(Vm *vm) {
        BootSetup b;
        int r;

        r = vm_build_parked(vm);
        if (r < 0)
                return r;
        /* The vCPUs are parked (not in KVM_RUN): RAM and registers can be set now. */
        r = boot_load(&vm->mem, vm->config, &b);
        if (r >= 0)
                r = boot_setup_vcpu(vm->vcpus[0].fd, &b);
        if (r < 0) {
                vm_teardown(vm);
                return r;
        }
        vm_set_run_control(vm, RUN_CONTROL_RUN);
        return 0;
}

int vm_start(Vm *vm) {
        int r;

        if (busy(vm))
                return -EBUSY;
        if (!vm->config)
                return -ENOEXEC; /* an incoming VM whose migration never sent its config */

        switch (vm_get_state(vm)) {
        case VM_STATE_CREATED:
        case VM_STATE_STOPPED:
        case VM_STATE_CRASHED:
                break;
        case VM_STATE_RUNNING:
        case VM_STATE_PAUSED:
                return -EBUSY;
        default:
                return -ESTALE;
        }
        r = vm_boot(vm);
        if (r < 0)
                return r;
        set_state(vm, VM_STATE_RUNNING);
        return 0;
}

void vm_pause_vcpus(Vm *vm) {
        vm_set_run_control(vm, RUN_CONTROL_PAUSE);
        for (unsigned i = 0; i < vm->n_vcpus; i++)
                vcpu_kick(&vm->vcpus[i]);
        vm_wait_parked(vm);
}

int vm_pause(Vm *vm) {

        if (busy(vm))
                return -EBUSY;
        if (vm_get_state(vm) == VM_STATE_PAUSED)
                return 0;
        if (vm_get_state(vm) != VM_STATE_RUNNING)
                return -ESTALE;
        vm_pause_vcpus(vm);
        set_state(vm, VM_STATE_PAUSED);
        return 0;
}

int vm_resume(Vm *vm) {

        if (busy(vm))
                return -EBUSY;
        if (vm_get_state(vm) == VM_STATE_RUNNING)
                return 0;
        if (vm_get_state(vm) != VM_STATE_PAUSED && vm_get_state(vm) != VM_STATE_MIGRATION_UNKNOWN)
                return -ESTALE;
        vm_set_run_control(vm, RUN_CONTROL_RUN);
        set_state(vm, VM_STATE_RUNNING);
        return 0;
}

int vm_request_shutdown(Vm *vm) {

        if (busy(vm))
                return -EBUSY;
        if (vm_get_state(vm) != VM_STATE_RUNNING && vm_get_state(vm) != VM_STATE_PAUSED)
                return -ESTALE;
        pm_press_power_button(&vm->pm);
        return 0;
}

int vm_stop(Vm *vm) {

        if (busy(vm))
                return -EBUSY;
        switch (vm_get_state(vm)) {
        case VM_STATE_RUNNING:
        case VM_STATE_PAUSED:
        case VM_STATE_INCOMING:
        case VM_STATE_MIGRATION_UNKNOWN:
                break;
        case VM_STATE_STOPPED:
                return 0;
        default:
                return -ESTALE;
        }
        vm_teardown(vm);
        set_state(vm, VM_STATE_STOPPED);
        return 0;
}

int vm_dispatch_events(Vm *vm) {
        uint64_t v;
        int ev, old;

        (void)!read(vm->event_fd, &v, sizeof v);
        ev = atomic_exchange(&vm->pending_events, 0);

        if (ev & VM_EVENT_STATE) {
                old = atomic_exchange(&vm->notify_old, -1);
                if (old >= 0 && vm->state_cb)
                        vm->state_cb(vm, (VmState)old, vm_get_state(vm), vm->state_cb_userdata);
        }
        ev &= VM_EVENT_GUEST_MASK;
        if (ev == 0 || !vm->built)
                return 0;
        if (atomic_load(&vm->job_active)) {
                /* The migration job owns the VM now; guest events wait for its end. */
                atomic_fetch_or(&vm->pending_events, ev);
                return 0;
        }

        if (ev & VM_EVENT_CRASH) {
                char reason[sizeof vm->crash_reason];
                pthread_mutex_lock(&vm->crash_lock);
                memcpy(reason, vm->crash_reason, sizeof reason);
                pthread_mutex_unlock(&vm->crash_lock);
                log_debug("VM %s crashed: %s", vm->name, reason);
                vm_teardown(vm);
                set_state(vm, VM_STATE_CRASHED);
        } else if (ev & VM_EVENT_POWEROFF) {
                vm_teardown(vm);
                set_state(vm, VM_STATE_STOPPED);
        } else if (ev & VM_EVENT_RESET) {
                VmState s = vm_get_state(vm);
                int r;
                /* A reset is a fresh boot of the same configuration. */
                vm_teardown(vm);
                r = vm_boot(vm);
                if (r < 0) {
                        set_state(vm, VM_STATE_CRASHED);
                        return r;
                }
                if (s == VM_STATE_PAUSED)
                        vm_pause_vcpus(vm);
        }
        return 1;
}

Vm *vm_free(Vm *vm) {
        if (!vm)
                return NULL;
        if (vm->built)
                vm_teardown(vm);
        console_close(vm);
        uart_done(&vm->uart);
        pm_done(&vm->pm);
        vm->event_fd = safe_close(vm->event_fd);
        pthread_mutex_destroy(&vm->run_lock);
        pthread_cond_destroy(&vm->run_cond);
        pthread_cond_destroy(&vm->park_cond);
        pthread_mutex_destroy(&vm->crash_lock);
        pthread_mutex_destroy(&vm->irq_lock);
        pthread_mutex_destroy(&vm->dirty_lock);
        vm_config_free(vm->config);
        free(vm->name);
        free(vm);
        return NULL;
}

/* --- migration and save/restore helpers --- */

int vm_prepare_incoming(Vm *vm) {
        int r;

        if (vm_get_state(vm) != VM_STATE_CREATED)
                return -ESTALE;
        r = vm_build_parked(vm);
        if (r < 0)
                return r;
        set_state(vm, VM_STATE_INCOMING);
        return 0;
}

int vm_incoming_setup(Vm *vm, const VmConfig *config) {
        int r;

        if (vm_get_state(vm) != VM_STATE_INCOMING || vm->config || vm->built)
                return -ESTALE;
        r = vm_take_config(vm, config);
        if (r < 0)
                return r;
        r = vm_build_parked(vm);
        if (r < 0)
                return r;
        vm_notify_changed(vm);
        return 0;
}

int vm_resume_incoming(Vm *vm) {
        if (vm_get_state(vm) != VM_STATE_INCOMING)
                return -ESTALE;
        vm_set_run_control(vm, RUN_CONTROL_RUN);
        set_state(vm, VM_STATE_RUNNING);
        return 0;
}

int vm_get_ram(Vm *vm, uint8_t **ret_base, uint64_t *ret_size, const VmMemoryRegion **ret_regions,
               unsigned *ret_n) {
        if (!vm->built)
                return -ESTALE;
        *ret_base = vm->mem.base;
        *ret_size = vm->mem.size;
        *ret_regions = vm->mem.regions;
        *ret_n = vm->mem.n_regions;
        return 0;
}

int vm_set_migration_state(Vm *vm, VmState state) {
        if (vm_get_state(vm) != VM_STATE_PAUSED && vm_get_state(vm) != VM_STATE_MIGRATION_UNKNOWN)
                return -ESTALE;
        if (state != VM_STATE_MIGRATED && state != VM_STATE_MIGRATION_UNKNOWN)
                return -EINVAL;
        if (state == VM_STATE_MIGRATED)
                vm_teardown(vm);
        set_state(vm, state);
        return 0;
}
