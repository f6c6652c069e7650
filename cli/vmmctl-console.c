/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <termios.h>

#include "dbus/bus-api.h"
#include "vmmctl.h"

/* console: copies the fd that OpenConsole() passes to standard output. A terminal device (pty
 * mode) is interactive: standard input goes to the guest, and Ctrl-] leaves. A file (file
 * mode) is printed and then followed as it grows, like tail -f (unless --no-follow): Ctrl-C
 * leaves. */

#define ESCAPE_CHAR 0x1d /* Ctrl-] */

static int write_all(int fd, const char *buf, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, buf, n);
                if (k < 0) {
                        if (errno == EINTR || errno == EAGAIN) {
                                struct pollfd p = { .fd = fd, .events = POLLOUT };
                                (void)poll(&p, 1, -1);
                                continue;
                        }
                        return -errno;
                }
                buf += k;
                n -= (size_t)k;
        }
        return 0;
}

/* Copies what can be read now. Returns 1 on data, 0 at end of file, < 0 on error. */
static int copy_some(int from, int to) {
        char buf[4096];
        ssize_t n = read(from, buf, sizeof buf);

        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 1 : -errno;
        if (n == 0)
                return 0;
        return write_all(to, buf, (size_t)n) < 0 ? -EPIPE : 1;
}

/* Standard input to the console; -ECANCELED when the escape key is seen. */
static int forward_input(int console_fd, bool *stdin_open) {
        char buf[256];
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        char *esc;

        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (n == 0) {
                *stdin_open = false;
                return 0;
        }
        esc = memchr(buf, ESCAPE_CHAR, (size_t)n);
        if (esc) {
                (void)write_all(console_fd, buf, (size_t)(esc - buf));
                return -ECANCELED;
        }
        return write_all(console_fd, buf, (size_t)n);
}

static int follow_file(int fd, bool follow) {
        _cleanup_close_ int inotify_fd = -EBADF;
        char proc_path[64];
        int r;

        for (;;) {
                r = copy_some(fd, STDOUT_FILENO);
                if (r < 0)
                        return r == -EPIPE ? 0 : r;
                if (r > 0)
                        continue;
                if (!follow)
                        return 0;

                if (inotify_fd < 0) {
                        inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
                        snprintf(proc_path, sizeof proc_path, "/proc/self/fd/%d", fd);
                        if (inotify_fd < 0 ||
                            inotify_add_watch(inotify_fd, proc_path, IN_MODIFY | IN_ATTRIB) < 0)
                                return ctl_log_error(-errno, "Cannot follow the console file: %s",
                                                     strerror(errno));
                        continue; /* anything written before the watch began */
                }

                struct pollfd p = { .fd = inotify_fd, .events = POLLIN };
                if (poll(&p, 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (p.revents & POLLIN) {
                        char ev[4096];
                        (void)!read(inotify_fd, ev, sizeof ev);
                }
        }
}

static int interact(int fd) {
        bool stdin_open = true;
        int r;

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = fd, .events = POLLIN },
                        { .fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN },
                };

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (p[0].revents & POLLIN) {
                        r = copy_some(fd, STDOUT_FILENO);
                        if (r <= 0)
                                return r == -EPIPE || r == -EIO ? 0 : r;
                } else if (p[0].revents & (POLLHUP | POLLERR))
                        return 0; /* the VM's console went away */
                if (p[1].revents & (POLLIN | POLLHUP)) {
                        r = forward_input(fd, &stdin_open);
                        if (r == -ECANCELED)
                                return 0;
                        if (r < 0)
                                return r;
                }
        }
}

int verb_console(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        bool stdin_is_tty = isatty(STDIN_FILENO), raw = false;
        struct termios saved;
        struct stat st;
        int r, passed;

        if (argc != 2)
                return ctl_log_error(-EINVAL, "console takes one VM name");
        r = ctl_get_vm_path(c, argv[1], &path);
        if (r < 0)
                return r;
        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_VM_INTERFACE, "OpenConsole",
                               &error, &reply, NULL);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to open the console");
        r = sd_bus_message_read(reply, "h", &passed);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd");
        /* The message owns the fd it carries. */
        fd = fcntl(passed, F_DUPFD_CLOEXEC, 3);
        if (fd < 0 || fstat(fd, &st) < 0)
                return ctl_log_error(-errno, "Bad console fd: %s", strerror(errno));

        if (S_ISREG(st.st_mode))
                return follow_file(fd, c->follow);

        if (stdin_is_tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
                struct termios t = saved;
                cfmakeraw(&t);
                raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
                fprintf(stderr, "Connected to the console of VM %s. Press Ctrl-] to leave.\r\n",
                        argv[1]);
        }
        r = interact(fd);
        if (raw) {
                (void)tcsetattr(STDIN_FILENO, TCSANOW, &saved);
                fputc('\n', stderr);
        }
        if (r < 0)
                return ctl_log_error(r, "Console of VM %s: %s", argv[1], strerror(-r));
        return 0;
}
