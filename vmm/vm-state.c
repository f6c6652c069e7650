/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VM's states and the one table of which lifecycle request is valid in which state.
 * The core's calls (vm.c) and the daemon's action checks (daemon/managed-vm.c) are both
 * read from it. */
#include <stdio.h>
#include <string.h>

#include "vm.h"

static const char *const state_table[_VM_STATE_MAX] = {
        [VM_STATE_CREATED] = "created",
        [VM_STATE_RUNNING] = "running",
        [VM_STATE_PAUSED] = "paused",
        [VM_STATE_INCOMING] = "incoming",
        [VM_STATE_MIGRATED] = "migrated",
        [VM_STATE_MIGRATION_UNKNOWN] = "migration-unknown",
        [VM_STATE_STOPPED] = "stopped",
        [VM_STATE_CRASHED] = "crashed",
};

const char *vm_state_to_string(VmState s) {
        return s >= 0 && s < _VM_STATE_MAX ? state_table[s] : NULL;
}

VmState vm_state_from_string(const char *s) {
        for (int i = 0; i < _VM_STATE_MAX; i++)
                if (s && strcmp(s, state_table[i]) == 0)
                        return (VmState)i;
        return _VM_STATE_INVALID;
}

static const char *const request_table[_VM_REQUEST_MAX] = {
        [VM_REQUEST_START] = "start",
        [VM_REQUEST_PAUSE] = "pause",
        [VM_REQUEST_RESUME] = "resume",
        [VM_REQUEST_SHUTDOWN] = "shutdown",
        [VM_REQUEST_STOP] = "stop",
};

const char *vm_request_to_string(VmRequest r) {
        return r >= 0 && r < _VM_REQUEST_MAX ? request_table[r] : NULL;
}

VmRequest vm_request_from_string(const char *s) {
        for (int i = 0; s && i < _VM_REQUEST_MAX; i++)
                if (strcmp(request_table[i], s) == 0)
                        return (VmRequest)i;
        return _VM_REQUEST_INVALID;
}

#define A VM_TRANSITION_ALLOWED
#define N VM_TRANSITION_ALREADY
#define B VM_TRANSITION_BUSY
#define _ VM_TRANSITION_INVALID

/* Rows: requests; columns: created, running, paused, incoming, migrated, migration-unknown,
 * stopped, crashed. */
static const VmTransition transitions[_VM_REQUEST_MAX][_VM_STATE_MAX] = {
        /*                       cre run pau inc mig unk sto cra */
        [VM_REQUEST_START] =    { A,  B,  B,  _,  _,  _,  A,  A },
        [VM_REQUEST_PAUSE] =    { _,  A,  N,  _,  _,  _,  _,  _ },
        [VM_REQUEST_RESUME] =   { _,  N,  A,  _,  _,  A,  _,  _ },
        [VM_REQUEST_SHUTDOWN] = { _,  A,  A,  _,  _,  _,  _,  _ },
        [VM_REQUEST_STOP] =     { _,  A,  A,  A,  _,  A,  N,  _ },
};

#undef A
#undef N
#undef B
#undef _

VmTransition vm_request_transition(VmRequest r, VmState s) {
        if (r < 0 || r >= _VM_REQUEST_MAX || s < 0 || s >= _VM_STATE_MAX)
                return VM_TRANSITION_INVALID;
        return transitions[r][s];
}

int vm_request_check(VmRequest r, VmState s) {
        switch (vm_request_transition(r, s)) {
        case VM_TRANSITION_ALLOWED:
                return 1;
        case VM_TRANSITION_ALREADY:
                return 0;
        case VM_TRANSITION_BUSY:
                return -EBUSY;
        default:
                return -ESTALE;
        }
}

size_t vm_request_allowed_states(VmRequest r, char *buf, size_t size) {
        unsigned n = 0, k = 0;
        size_t len = 0;

        for (int s = 0; s < _VM_STATE_MAX; s++)
                n += vm_request_transition(r, (VmState)s) == VM_TRANSITION_ALLOWED;
        if (size > 0)
                buf[0] = 0;
        for (int s = 0; s < _VM_STATE_MAX && size > 0; s++) {
                const char *sep;
                int w;

                if (vm_request_transition(r, (VmState)s) != VM_TRANSITION_ALLOWED)
                        continue;
                k++;
                sep = k == 1 ? "" : k == n ? " or " : ", ";
                w = snprintf(buf + len, size - len, "%s%s", sep, state_table[s]);
                if (w < 0 || (size_t)w >= size - len)
                        return size - 1;
                len += (size_t)w;
        }
        return len;
}
