/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The migration stream's message headers: encoding, and the destination's validation of
 * every header it reads (bounds, lengths, unknown types). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "state-stream.h"
#include "wire.h"

#define RAM (UINT64_C(256) << 20)

static int check(uint32_t type, uint32_t len, uint64_t a, uint64_t b) {
        MigHeader h = { .type = type, .len = len, .a = a, .b = b };
        return mig_header_validate(&h, RAM);
}

static void test_encode_decode(void **state) {
        MigHeader h = { .type = MIG_PAGES, .len = 0x1000, .a = UINT64_C(0x0123456789abcdef), .b = 7 }, d;
        uint8_t buf[MIG_HEADER_SIZE];

        mig_header_encode(&h, buf);
        assert_int_equal(buf[0], MIG_PAGES); /* little-endian */
        assert_int_equal(buf[5], 0x10);
        assert_int_equal(buf[8], 0xef);
        assert_int_equal(buf[15], 0x01);
        mig_header_decode(buf, &d);
        assert_memory_equal(&h, &d, sizeof h);
}

static void test_pages(void **state) {
        assert_int_equal(check(MIG_PAGES, 4096, 0, 1), 0);
        assert_int_equal(check(MIG_PAGES, MIG_MAX_PAGES_PER_MSG * 4096, RAM - MIG_MAX_PAGES_PER_MSG * 4096,
                               MIG_MAX_PAGES_PER_MSG), 0);
        assert_int_equal(check(MIG_PAGES, 0, 0, 0), -EBADMSG);             /* no pages */
        assert_int_equal(check(MIG_PAGES, 4096, 0, 2), -EBADMSG);          /* length mismatch */
        assert_int_equal(check(MIG_PAGES, 4096, 100, 1), -EBADMSG);        /* unaligned */
        assert_int_equal(check(MIG_PAGES, 4096, RAM, 1), -EBADMSG);        /* past the end */
        assert_int_equal(check(MIG_PAGES, 8192, RAM - 4096, 2), -EBADMSG); /* runs over the end */
        assert_int_equal(check(MIG_PAGES, (MIG_MAX_PAGES_PER_MSG + 1) * 4096, 0, MIG_MAX_PAGES_PER_MSG + 1),
                         -EBADMSG);
        assert_int_equal(check(MIG_PAGES, 4096, UINT64_MAX - 4095, 1), -EBADMSG); /* wraps */
        assert_int_equal(check(MIG_ZERO, 0, 0, RAM / 4096), 0);
        assert_int_equal(check(MIG_ZERO, 4096, 0, 1), -EBADMSG); /* zero pages carry nothing */
        assert_int_equal(check(MIG_ZERO, 0, 4096, RAM / 4096), -EBADMSG);
        assert_int_equal(check(MIG_ZERO, 0, 0, 0), -EBADMSG);
}

static void test_ram_map(void **state) {
        uint64_t chunks = RAM >> MIG_MAP_CHUNK_SHIFT; /* 128 */

        assert_int_equal(check(MIG_RAM_MAP, (uint32_t)(chunks / 8), MIG_MAP_CHUNK_SHIFT, chunks), 0);
        assert_int_equal(check(MIG_RAM_MAP, (uint32_t)(chunks / 8), 12, chunks), -EBADMSG);
        assert_int_equal(check(MIG_RAM_MAP, (uint32_t)(chunks / 8), MIG_MAP_CHUNK_SHIFT, chunks + 1), -EBADMSG);
        assert_int_equal(check(MIG_RAM_MAP, (uint32_t)(chunks / 8 + 1), MIG_MAP_CHUNK_SHIFT, chunks), -EBADMSG);
        assert_int_equal(check(MIG_RAM_MAP, 0, MIG_MAP_CHUNK_SHIFT, 0), -EBADMSG);
        /* RAM that is not a whole number of chunks: the last chunk is partial. */
        MigHeader h = { .type = MIG_RAM_MAP, .len = 1, .a = MIG_MAP_CHUNK_SHIFT, .b = 2 };
        assert_int_equal(mig_header_validate(&h, (UINT64_C(3) << 20)), 0);
}

static void test_other_types(void **state) {
        assert_int_equal(check(MIG_HELLO, 8, 0, 0), 0);
        assert_int_equal(check(MIG_HELLO, 8 + MIG_MAX_CONFIG_LEN, 0, 0), 0);
        assert_int_equal(check(MIG_HELLO, 7, 0, 0), -EBADMSG);
        assert_int_equal(check(MIG_HELLO, 9 + MIG_MAX_CONFIG_LEN, 0, 0), -EBADMSG);
        assert_int_equal(check(MIG_STATE, 100, 0, 0), 0);
        assert_int_equal(check(MIG_STATE, 0, 0, 0), -EBADMSG);
        assert_int_equal(check(MIG_STATE, STATE_MAX_SIZE + 1, 0, 0), -EBADMSG);
        assert_int_equal(check(MIG_STATE_TRIAL, 100, 0, 0), 0);
        assert_int_equal(check(MIG_STATE_TRIAL, 0, 0, 0), -EBADMSG);
        assert_int_equal(check(MIG_STATE_TRIAL, STATE_MAX_SIZE + 1, 0, 0), -EBADMSG);
        assert_int_equal(check(MIG_ERROR, MIG_MAX_ERROR_LEN, 5, 0), 0);
        assert_int_equal(check(MIG_ERROR, MIG_MAX_ERROR_LEN + 1, 5, 0), -EBADMSG);
        const uint32_t empty[] = { MIG_HELLO_ACK, MIG_ITER_END, MIG_FLUSH, MIG_COMPLETE,
                                   MIG_READY,     MIG_COMMIT,   MIG_ACK,     MIG_TRIAL_DONE };
        for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
                assert_int_equal(check(empty[i], 0, 1, 2), 0);
                assert_int_equal(check(empty[i], 1, 1, 2), -EBADMSG);
        }
        assert_int_equal(check(0, 0, 0, 0), -EBADMSG);
        assert_int_equal(check(_MIG_MAX, 0, 0, 0), -EBADMSG);
        assert_int_equal(check(UINT32_MAX, 0, 0, 0), -EBADMSG);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_encode_decode),
                cmocka_unit_test(test_pages),
                cmocka_unit_test(test_ram_map),
                cmocka_unit_test(test_other_types),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
