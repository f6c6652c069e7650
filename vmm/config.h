/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

#include "macro.h"

/* The VM configuration (SPEC §3). One schema for every front end: D-Bus, vmmctl, tests. */

#define VM_CONFIG_MAX_JSON (64 * 1024)
#define VM_CONFIG_MAX_VCPUS 64
#define VM_CONFIG_MIN_MEMORY_MIB 16
#define VM_CONFIG_MAX_MEMORY_MIB (1024 * 1024) /* 1 TiB */
#define VM_CONFIG_MAX_CMDLINE 4096
#define VM_CONFIG_MAX_PATH 4096

typedef enum SerialMode {
        SERIAL_MODE_NONE, /* output discarded */
        SERIAL_MODE_FILE, /* appended to a file */
        SERIAL_MODE_PTY,  /* a pseudo terminal; input from it too */
        _SERIAL_MODE_MAX,
} SerialMode;

typedef enum KernelFormat {
        KERNEL_FORMAT_UNKNOWN,
        KERNEL_FORMAT_PVH_ELF,
        KERNEL_FORMAT_BZIMAGE,
} KernelFormat;

typedef struct VmConfig {
        unsigned vcpus;
        uint64_t memory_mib;
        char *kernel;
        char *initramfs; /* NULL if none */
        char *cmdline;   /* never NULL after parsing */
        SerialMode serial_mode;
        char *serial_path; /* file mode: required; pty mode: NULL */
        KernelFormat kernel_format; /* detected while validating */
} VmConfig;

const char *serial_mode_to_string(SerialMode m);
const char *kernel_format_to_string(KernelFormat f);

/* Parses and validates a JSON config: types, ranges, unknown keys, that the kernel and
 * initramfs are readable and that the kernel is a PVH ELF or a bzImage. On failure returns
 * -EINVAL (or another negative errno) and, if ret_error is not NULL, a message that names
 * the offending key, e.g. "memory_mib: must be between 16 and 1048576, got 0". */
int vm_config_parse(const char *json, VmConfig **ret, char **ret_error);
/* The same checks without opening any file the config names: for a config that came from
 * elsewhere (a migration source), whose kernel and initramfs are never loaded here. */
#define VM_CONFIG_PARSE_NO_FILES (1u << 0)
int vm_config_parse_flags(const char *json, unsigned flags, VmConfig **ret, char **ret_error);

/* Merges 'overlay' (a JSON object) over 'base' (both JSON texts), key by key, objects
 * recursively, and returns the merged text. Used by ReceiveMigration's "config" option. */
int vm_config_merge_json(const char *base, const char *overlay, char **ret, char **ret_error);

/* Canonical JSON text of a config (all keys, the form that parses back to the same). */
char *vm_config_to_json(const VmConfig *c);

int vm_config_copy(const VmConfig *c, VmConfig **ret);
VmConfig *vm_config_free(VmConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(VmConfig *, vm_config_free);
