/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdio.h>

#include "log.h"
#include "vm-name.h"

/* Logs with the journal field VM=<name> (shown as "[VM=name]" on stderr). */
#define log_vm_errno(level, error, name, ...)                                                      \
        ({                                                                                         \
                char _vm_field[sizeof("VM=") + VM_NAME_MAX];                                       \
                snprintf(_vm_field, sizeof _vm_field, "VM=%s", (name));                            \
                log_struct_errno((level), (error), ((const char *const[]){ _vm_field, NULL }),     \
                                 __VA_ARGS__);                                                     \
        })
#define log_vm(level, name, ...) (void)log_vm_errno(level, 0, name, __VA_ARGS__)
