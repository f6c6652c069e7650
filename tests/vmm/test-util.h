/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"

#define EXIT_TEST_SKIP 77

/* The test guest ELF, built by guest/meson.build; meson passes its path in the
 * environment. */
static inline char *test_guest_path(void) {
        const char *p = getenv("VMMD_TEST_GUEST");
        if (!p) {
                fprintf(stderr, "VMMD_TEST_GUEST is not set\n");
                exit(EXIT_FAILURE);
        }
        return strdup(p);
}

/* Exits 77 (skip) when this host has no usable KVM. */
static inline void require_kvm(void) {
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                fprintf(stderr, "SKIP: /dev/kvm: %m\n");
                exit(EXIT_TEST_SKIP);
        }
        close(fd);
}

/* A hang watchdog for tests that run guests: if the process is still running after
 * 'seconds', print every thread's name, state, kernel wait channel and kernel stack (as
 * root) and the tail of the given files (guest consoles), then abort, so a hung test says
 * where it hangs instead of only timing out. */
#include <dirent.h>
#include <signal.h>

static const char *hang_watch_files[4];

static inline void hang_dump_file(const char *label, const char *path, size_t tail) {
        char buf[8192];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        off_t end = lseek(fd, 0, SEEK_END);
        off_t from = end > (off_t)tail ? end - (off_t)tail : 0;
        ssize_t n = pread(fd, buf, MIN(sizeof buf - 1, tail), from);
        close(fd);
        if (n > 0) {
                buf[n] = 0;
                fprintf(stderr, "--- %s %s (last %zd bytes) ---\n%s\n", label, path, n, buf);
        }
}

static inline void hang_watchdog_fire(int sig) {
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;

        fprintf(stderr, "=== test still running after its watchdog period: threads ===\n");
        while (d && (e = readdir(d))) {
                char p[300];
                if (e->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof p, "/proc/self/task/%s/stat", e->d_name);
                hang_dump_file("thread", p, 300);
                snprintf(p, sizeof p, "/proc/self/task/%s/wchan", e->d_name);
                hang_dump_file("wchan", p, 200);
                snprintf(p, sizeof p, "/proc/self/task/%s/stack", e->d_name);
                hang_dump_file("kernel stack", p, 2000);
        }
        if (d)
                closedir(d);
        for (size_t i = 0; i < ELEMENTSOF(hang_watch_files); i++)
                if (hang_watch_files[i])
                        hang_dump_file("file", hang_watch_files[i], 1500);
        signal(SIGABRT, SIG_DFL);
        abort();
}

static inline void hang_watchdog_arm(unsigned seconds) {
        signal(SIGALRM, hang_watchdog_fire);
        alarm(seconds);
}

/* Files whose tail the watchdog prints (at most 4; NULL clears a slot). */
static inline void hang_watchdog_watch(unsigned slot, const char *path) {
        if (slot < ELEMENTSOF(hang_watch_files))
                hang_watch_files[slot] = path;
}
