/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The serial console: where the UART's output goes (a pty or a file), and the thread that
 * feeds pty input into the UART's receive FIFO as it has room. */
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <termios.h>
#include <unistd.h>

#include "vm-internal.h"

void vm_console_output(void *opaque, const uint8_t *buf, size_t n) {
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

void vm_console_rx_space(void *opaque) {
        Vm *vm = opaque;
        uint64_t one = 1;

        if (vm->console_space_fd >= 0)
                (void)!write(vm->console_space_fd, &one, sizeof one);
}

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

int vm_console_open(Vm *vm) {
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

void vm_console_close(Vm *vm) {
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
