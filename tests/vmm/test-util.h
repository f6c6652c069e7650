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
