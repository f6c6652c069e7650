/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the saved-state container reader. */
#include <stdint.h>
#include <stdlib.h>

#include "state-stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        StateReader r;
        StateSection s;
        volatile uint8_t sink = 0;

        if (state_reader_init(&r, data, size) < 0)
                return 0;
        while (state_reader_next(&r, &s) > 0)
                for (uint32_t i = 0; i < s.size; i++)
                        sink ^= s.data[i];
        (void)sink;
        return 0;
}
