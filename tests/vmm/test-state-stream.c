/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "state-stream.h"

static void build(uint8_t **buf, size_t *size) {
        StateWriter w;
        uint8_t a[13], b[64];
        memset(a, 0xaa, sizeof a);
        memset(b, 0xbb, sizeof b);
        state_writer_init(&w);
        state_writer_add(&w, 1, 1, 0, a, sizeof a);
        state_writer_add(&w, 16, 1, 3, b, sizeof b);
        state_writer_add(&w, 2, 1, 0, NULL, 0);
        assert_int_equal(state_writer_finish(&w, buf, size), 0);
}

static void test_round_trip(void **state) {
        uint8_t *buf;
        size_t size;
        StateReader r;
        StateSection s;

        build(&buf, &size);
        assert_int_equal(size, 24 + (16 + 16) + (16 + 64) + 16);
        assert_int_equal(state_reader_init(&r, buf, size), 0);
        assert_int_equal(state_reader_next(&r, &s), 1);
        assert_int_equal(s.id, 1);
        assert_int_equal(s.size, 13);
        assert_int_equal(s.data[12], 0xaa);
        assert_int_equal(state_reader_next(&r, &s), 1);
        assert_int_equal(s.id, 16);
        assert_int_equal(s.instance, 3);
        assert_int_equal(s.size, 64);
        assert_int_equal(state_reader_next(&r, &s), 1);
        assert_int_equal(s.id, 2);
        assert_int_equal(s.size, 0);
        assert_int_equal(state_reader_next(&r, &s), 0);
        free(buf);
}

static void test_bad_header(void **state) {
        uint8_t *buf;
        size_t size;
        StateReader r;

        build(&buf, &size);
        assert_int_equal(state_reader_init(&r, buf, 10), -EBADMSG);
        assert_int_equal(state_reader_init(&r, buf, size - 8), -EBADMSG); /* total size */
        buf[8] = 9;
        assert_int_equal(state_reader_init(&r, buf, size), -EPROTONOSUPPORT);
        buf[8] = 1;
        buf[0] = 'X';
        assert_int_equal(state_reader_init(&r, buf, size), -EBADMSG);
        free(buf);
}

/* Every truncation, and every single-byte corruption of the section headers, is either
 * read consistently or rejected with -EBADMSG, never read beyond the buffer. */
static void test_garbled(void **state) {
        uint8_t *buf;
        size_t size;

        build(&buf, &size);
        for (size_t pos = 0; pos < size; pos++)
                for (int v = 0; v < 256; v += 17) {
                        uint8_t *copy = malloc(size);
                        StateReader r;
                        StateSection s;
                        int k;

                        memcpy(copy, buf, size);
                        copy[pos] = (uint8_t)v;
                        if (state_reader_init(&r, copy, size) < 0) {
                                free(copy);
                                continue;
                        }
                        while ((k = state_reader_next(&r, &s)) > 0)
                                assert_true(s.data + s.size <= copy + size);
                        assert_true(k == 0 || k == -EBADMSG);
                        free(copy);
                }
        free(buf);
}

static void test_limits(void **state) {
        StateWriter w;
        uint8_t *buf = NULL;
        size_t size;
        uint8_t *big = calloc(1, STATE_MAX_SECTION_SIZE + 1);

        state_writer_init(&w);
        state_writer_add(&w, 1, 1, 0, big, STATE_MAX_SECTION_SIZE + 1);
        assert_int_equal(state_writer_finish(&w, &buf, &size), -E2BIG);
        assert_null(buf);
        free(big);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_bad_header),
                cmocka_unit_test(test_garbled),
                cmocka_unit_test(test_limits),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
