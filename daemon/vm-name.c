/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "vm-name.h"

static bool vm_name_char_ok(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
}

bool vm_name_is_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strnlen(name, VM_NAME_MAX + 1);
        if (n == 0 || n > VM_NAME_MAX)
                return false;
        if (name[0] == '.' || name[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!vm_name_char_ok(name[i]))
                        return false;
        return true;
}
