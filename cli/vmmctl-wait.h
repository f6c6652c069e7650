/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "vmmctl.h"

/* Follows one VM's State until the guest is down (not running, paused, incoming or
 * migration-unknown), the VM is deleted or vmmd goes away. */
typedef struct VmWatch {
        Ctl *ctl;
        char *path;
        char *state;
        bool removed;
        bool daemon_gone;
        sd_bus_slot *slots[3];
} VmWatch;

/* Subscribes, then reads the current state. */
int vm_watch_begin(Ctl *c, const char *path, VmWatch *w);
bool vm_watch_is_down(const VmWatch *w);
/* 0 once down, -ETIME when timeout_usec (UINT64_MAX: none) passed first. */
int vm_watch_run(VmWatch *w, uint64_t timeout_usec);
void vm_watch_done(VmWatch *w);
