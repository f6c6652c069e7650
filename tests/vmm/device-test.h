/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "state-stream.h"
#include "vm-internal.h"

/* Saves one device as a state stream of its own and returns that stream's only section;
 * the section points into *ret_buf, which the caller frees. */
static inline StateSection device_test_save(const Device *d, uint8_t **ret_buf) {
        _cleanup_free_ void *scratch = NULL;
        size_t scratch_size = 0, size;
        StateWriter w;
        StateReader r;
        StateSection s;

        state_writer_init(&w);
        assert_int_equal(device_save(d, &w, &scratch, &scratch_size), 0);
        assert_int_equal(state_writer_finish(&w, ret_buf, &size), 0);
        assert_int_equal(state_reader_init(&r, *ret_buf, size), 0);
        assert_int_equal(state_reader_next(&r, &s), 1);
        return s;
}
