/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ram_residency(): which pages of anonymous memory hold data (present or swapped out),
 * checked against the pages this test touched, and its cost against mincore()'s, printed
 * per GiB (docs/migration.md). With swap on the machine, pages pushed out with
 * MADV_PAGEOUT must still count. */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <cmocka.h>

#include "macro.h"
#include "residency.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static uint64_t count(const unsigned char *vec, uint64_t n) {
        uint64_t c = 0;
        for (uint64_t i = 0; i < n; i++)
                c += vec[i] & 1;
        return c;
}

/* Every third page touched, the others never: exactly those count. */
static void test_touched_pages(void **state) {
        const uint64_t size = 16 * MiB, n = size / 4096;
        uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        unsigned char *vec = malloc(n);

        assert_true(m != MAP_FAILED);
        assert_non_null(vec);
        (void)madvise(m, size, MADV_NOHUGEPAGE); /* a huge page would make its neighbours present */
        for (uint64_t p = 0; p < n; p += 3)
                m[p * 4096 + 7] = 0xa5;
        assert_int_equal(ram_residency(m, size, vec), (int64_t)DIV_ROUND_UP(n, 3));
        for (uint64_t p = 0; p < n; p++)
                assert_int_equal(vec[p], p % 3 == 0);
        assert_int_equal(ram_residency(m + 1, size - 4096, vec), -EINVAL);
        munmap(m, size);
        free(vec);
}

static bool swap_enabled(void) {
        FILE *f = fopen("/proc/swaps", "re");
        char line[256];
        int lines = 0;
        if (!f)
                return false;
        while (fgets(line, sizeof line, f))
                lines++;
        fclose(f);
        return lines > 1;
}

/* Pushed out to swap, the pages still hold data: they must count (mincore() may not). */
static void test_swapped_pages(void **state) {
        const uint64_t size = 8 * MiB, n = size / 4096;
        uint8_t *m;
        unsigned char *vec;

        if (!swap_enabled()) {
                printf("# no swap on this machine: the swapped-out case is not run here (the kvm "
                       "suite's migration test makes a swapfile)\n");
                skip();
        }
        m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        vec = malloc(n);
        assert_true(m != MAP_FAILED);
        assert_non_null(vec);
        (void)madvise(m, size, MADV_NOHUGEPAGE);
        for (uint64_t p = 0; p < n; p++)
                memset(m + p * 4096, (int)(p | 1), 64);
        assert_int_equal(madvise(m, size, MADV_PAGEOUT), 0);
        assert_int_equal(mincore(m, size, vec), 0);
        printf("# after MADV_PAGEOUT of %" PRIu64 " pages: mincore says %" PRIu64 " resident\n", n, count(vec, n));
        assert_int_equal(ram_residency(m, size, vec), (int64_t)n);
        for (uint64_t p = 0; p < n; p++)
                assert_int_equal(m[p * 4096], (uint8_t)(p | 1));
        munmap(m, size);
        free(vec);
}

/* Best of three, in ms per GiB. */
static void time_both(const char *what, uint8_t *m, uint64_t size, unsigned char *vec) {
        uint64_t best_pm = UINT64_MAX, best_mc = UINT64_MAX;
        for (int i = 0; i < 3; i++) {
                uint64_t t = now_ns();
                assert_true(ram_residency(m, size, vec) >= 0);
                best_pm = MIN(best_pm, now_ns() - t);
                t = now_ns();
                assert_int_equal(mincore(m, size, vec), 0);
                best_mc = MIN(best_mc, now_ns() - t);
        }
        printf("# %s: pagemap %.2f ms/GiB, mincore %.2f ms/GiB\n", what,
               (double)best_pm / 1e6 * (double)GiB / (double)size, (double)best_mc / 1e6 * (double)GiB / (double)size);
}

static void test_cost(void **state) {
        const uint64_t size = GiB, n = size / 4096;
        uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        unsigned char *vec = malloc(n);

        assert_true(m != MAP_FAILED);
        assert_non_null(vec);
        (void)madvise(m, size, MADV_HUGEPAGE); /* as guest RAM is */
        time_both("1 GiB untouched", m, size, vec);
        for (uint64_t p = 0; p < n; p++)
                m[p * 4096] = 1;
        time_both("1 GiB resident (THP where available)", m, size, vec);
        assert_int_equal(count(vec, n), n);
        munmap(m, size);
        m = mmap(NULL, size / 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        assert_true(m != MAP_FAILED);
        (void)madvise(m, size / 4, MADV_NOHUGEPAGE);
        for (uint64_t p = 0; p < n / 4; p++)
                m[p * 4096] = 1;
        time_both("256 MiB resident in 4 KiB pages", m, size / 4, vec);
        munmap(m, size / 4);
        free(vec);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_touched_pages),
                cmocka_unit_test(test_swapped_pages),
                cmocka_unit_test(test_cost),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
