/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Names of the D-Bus API, version 1 (SPEC §2, docs/dbus-api.md). Shared by the daemon's bus
 * layer and vmmctl. */

#define VMMD_BUS_NAME "org.vmmd.VMM1"
#define VMMD_MANAGER_PATH "/org/vmmd/VMM1"
#define VMMD_VM_PATH_PREFIX "/org/vmmd/VMM1/vm"
#define VMMD_JOB_PATH_PREFIX "/org/vmmd/VMM1/job"

#define VMMD_MANAGER_INTERFACE "org.vmmd.VMM1.Manager"
#define VMMD_VM_INTERFACE "org.vmmd.VMM1.VM"
#define VMMD_JOB_INTERFACE "org.vmmd.VMM1.Job"

/* polkit actions */
#define VMMD_ACTION_MANAGE "org.vmmd.vmm1.manage"
#define VMMD_ACTION_MIGRATE "org.vmmd.vmm1.migrate"

/* Errors (mapped to errnos in bus-errors.c) */
#define VMMD_ERROR_PREFIX "org.vmmd.VMM1.Error."
#define VMMD_ERROR_NO_SUCH_VM VMMD_ERROR_PREFIX "NoSuchVM"
#define VMMD_ERROR_VM_EXISTS VMMD_ERROR_PREFIX "VMExists"
#define VMMD_ERROR_INVALID_NAME VMMD_ERROR_PREFIX "InvalidName"
#define VMMD_ERROR_INVALID_CONFIG VMMD_ERROR_PREFIX "InvalidConfig"
#define VMMD_ERROR_INVALID_STATE VMMD_ERROR_PREFIX "InvalidState"
#define VMMD_ERROR_BUSY VMMD_ERROR_PREFIX "Busy"
#define VMMD_ERROR_LIMIT_EXCEEDED VMMD_ERROR_PREFIX "LimitExceeded"
#define VMMD_ERROR_NO_CONSOLE VMMD_ERROR_PREFIX "NoConsole"
#define VMMD_ERROR_ACCESS_DENIED VMMD_ERROR_PREFIX "AccessDenied"
#define VMMD_ERROR_NOT_SUPPORTED VMMD_ERROR_PREFIX "NotSupported"
#define VMMD_ERROR_MIGRATION_FAILED VMMD_ERROR_PREFIX "MigrationFailed"
#define VMMD_ERROR_CANCELLED VMMD_ERROR_PREFIX "Cancelled"
#define VMMD_ERROR_NO_SUCH_JOB VMMD_ERROR_PREFIX "NoSuchJob"
#define VMMD_ERROR_FAILED VMMD_ERROR_PREFIX "Failed"

