/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* VM names: 1..64 characters from [A-Za-z0-9_.-], not starting with '.' or '-' (so a name
 * is never ".", "..", a hidden file or a command-line option). The same name is used in
 * object paths (escaped), unit instance names (vmmd-vm@NAME) and file names. */
#define VM_NAME_MAX 64

bool vm_name_is_valid(const char *name);
