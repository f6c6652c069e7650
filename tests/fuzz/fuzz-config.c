/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the VM config parser and the config merge. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1), *err = NULL, *merged = NULL;
        VmConfig *c = NULL;

        memcpy(s, data, size);
        s[size] = 0;
        if (vm_config_parse(s, &c, &err) >= 0) {
                char *j = vm_config_to_json(c);
                free(j);
                vm_config_free(c);
        }
        free(err);
        err = NULL;
        if (vm_config_merge_json("{\"vcpus\":1,\"serial\":{\"mode\":\"pty\"}}", s, &merged, &err) >= 0)
                free(merged);
        free(err);
        free(s);
        return 0;
}
