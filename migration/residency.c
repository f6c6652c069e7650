/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "macro.h"
#include "residency.h"

#define PAGE_SIZE 4096
#define PM_PRESENT (UINT64_C(1) << 63)
#define PM_SWAP (UINT64_C(1) << 62)
#define ENTRIES_PER_READ 8192 /* 64 KiB of entries: 32 MiB of RAM per read */

int64_t ram_residency(const void *base, uint64_t size, unsigned char *ret_vec) {
        uint64_t entries[ENTRIES_PER_READ];
        uint64_t first = (uint64_t)(uintptr_t)base / PAGE_SIZE, n_pages = size / PAGE_SIZE;
        int64_t found = 0;
        int fd;

        if ((uintptr_t)base % PAGE_SIZE || size % PAGE_SIZE)
                return -EINVAL;
        /* Bits 63 and 62 are there for every process; only the frame numbers need
         * CAP_SYS_ADMIN (they read as zero without it), and we do not use them. */
        fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        for (uint64_t p = 0; p < n_pages;) {
                uint64_t want = MIN(n_pages - p, (uint64_t)ENTRIES_PER_READ);
                ssize_t k = pread(fd, entries, want * sizeof entries[0], (off_t)((first + p) * sizeof entries[0]));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0 || k % sizeof entries[0]) {
                        int r = k < 0 ? negative_errno() : -EIO;
                        close(fd);
                        return r;
                }
                uint64_t got = (uint64_t)k / sizeof entries[0];
                for (uint64_t i = 0; i < got; i++) {
                        bool in = entries[i] & (PM_PRESENT | PM_SWAP);
                        ret_vec[p + i] = in;
                        found += in;
                }
                p += got;
        }
        close(fd);
        return found;
}
