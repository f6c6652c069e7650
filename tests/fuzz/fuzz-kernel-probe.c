/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the PVH ELF and bzImage header parsers. */
#include <stdint.h>
#include <stdlib.h>

#include "kernel-probe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        PvhElfInfo pvh;
        BzImageInfo bz;

        (void)pvh_elf_parse(data, size, &pvh);
        (void)bzimage_parse(data, size, &bz);
        return 0;
}
