/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include "bus-errors.h"

/* Lets sd_bus_error_get_errno() and the return value of sd_bus_call() turn our error names
 * into errnos (clients such as vmmctl). The daemon picks names with bus_error_from_core(). */
const sd_bus_error_map vmmd_bus_error_map[] = {
        SD_BUS_ERROR_MAP(VMMD_ERROR_NO_SUCH_VM, ENXIO),
        SD_BUS_ERROR_MAP(VMMD_ERROR_VM_EXISTS, EEXIST),
        SD_BUS_ERROR_MAP(VMMD_ERROR_INVALID_CONFIG, EINVAL),
        SD_BUS_ERROR_MAP(VMMD_ERROR_INVALID_NAME, EINVAL),
        SD_BUS_ERROR_MAP(VMMD_ERROR_INVALID_STATE, EBADFD),
        SD_BUS_ERROR_MAP(VMMD_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(VMMD_ERROR_LIMIT_EXCEEDED, ENOSPC),
        SD_BUS_ERROR_MAP(VMMD_ERROR_NO_CONSOLE, ENODEV),
        SD_BUS_ERROR_MAP(VMMD_ERROR_ACCESS_DENIED, EACCES),
        SD_BUS_ERROR_MAP(VMMD_ERROR_NOT_SUPPORTED, EOPNOTSUPP),
        SD_BUS_ERROR_MAP(VMMD_ERROR_MIGRATION_FAILED, ECOMM),
        SD_BUS_ERROR_MAP(VMMD_ERROR_CANCELLED, ECANCELED),
        SD_BUS_ERROR_MAP(VMMD_ERROR_NO_SUCH_JOB, ESRCH),
        SD_BUS_ERROR_MAP(VMMD_ERROR_FAILED, EIO),
        SD_BUS_ERROR_MAP_END,
};

int bus_errors_register(void) {
        static int registered = 0;
        int r;

        if (registered)
                return 0;
        r = sd_bus_error_add_map(vmmd_bus_error_map);
        if (r < 0)
                return r;
        registered = 1;
        return 0;
}

int bus_error_from_core(sd_bus_error *error, int r, const char *message) {
        const char *name;

        switch (r) {
        case -ENXIO:
                name = VMMD_ERROR_NO_SUCH_VM;
                break;
        case -EEXIST:
                name = VMMD_ERROR_VM_EXISTS;
                break;
        case -EINVAL:
        case -E2BIG:
                name = VMMD_ERROR_INVALID_CONFIG;
                break;
        case -EBADFD:
                name = VMMD_ERROR_INVALID_STATE;
                break;
        case -EBUSY:
                name = VMMD_ERROR_BUSY;
                break;
        case -ENOSPC:
                name = VMMD_ERROR_LIMIT_EXCEEDED;
                break;
        case -ENODEV:
                name = VMMD_ERROR_NO_CONSOLE;
                break;
        case -EOPNOTSUPP:
                name = VMMD_ERROR_NOT_SUPPORTED;
                break;
        case -ERANGE:
                name = SD_BUS_ERROR_INVALID_ARGS;
                break;
        case -ENOMEM:
                name = SD_BUS_ERROR_NO_MEMORY;
                break;
        default:
                /* A failure inside the VMM (KVM, files, memory): the message has the cause. */
                name = VMMD_ERROR_FAILED;
                break;
        }

        if (message)
                sd_bus_error_set(error, name, message);
        else
                sd_bus_error_setf(error, name, "%s", strerror(r < 0 ? -r : r));
        return r < 0 ? r : -r;
}
