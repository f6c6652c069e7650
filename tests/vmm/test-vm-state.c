/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The one table of VM state transitions (vmm/vm-state.c): the core's answers and the
 * allowed-state lists the daemon's messages are made of. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vm.h"

static void test_names(void **state) {
        for (int s = 0; s < _VM_STATE_MAX; s++)
                assert_int_equal(vm_state_from_string(vm_state_to_string((VmState)s)), s);
        for (int r = 0; r < _VM_REQUEST_MAX; r++)
                assert_int_equal(vm_request_from_string(vm_request_to_string((VmRequest)r)), r);
        assert_int_equal(vm_request_from_string("reboot"), _VM_REQUEST_INVALID);
        assert_null(vm_request_to_string(_VM_REQUEST_MAX));
        (void)state;
}

static void test_allowed_lists(void **state) {
        static const char *const want[_VM_REQUEST_MAX] = {
                [VM_REQUEST_START] = "created, stopped or crashed",
                [VM_REQUEST_PAUSE] = "running",
                [VM_REQUEST_RESUME] = "paused or migration-unknown",
                [VM_REQUEST_SHUTDOWN] = "running or paused",
                [VM_REQUEST_STOP] = "running, paused, incoming or migration-unknown",
        };
        char buf[128];

        for (int r = 0; r < _VM_REQUEST_MAX; r++) {
                vm_request_allowed_states((VmRequest)r, buf, sizeof buf);
                assert_string_equal(buf, want[r]);
        }
        /* A short buffer is cut, not overrun. */
        vm_request_allowed_states(VM_REQUEST_STOP, buf, 8);
        assert_string_equal(buf, "running");
        (void)state;
}

static void test_core_answers(void **state) {
        /* Already there: the core's call succeeds doing nothing. */
        assert_int_equal(vm_request_check(VM_REQUEST_PAUSE, VM_STATE_PAUSED), 0);
        assert_int_equal(vm_request_check(VM_REQUEST_RESUME, VM_STATE_RUNNING), 0);
        assert_int_equal(vm_request_check(VM_REQUEST_STOP, VM_STATE_STOPPED), 0);
        assert_int_equal(vm_request_transition(VM_REQUEST_PAUSE, VM_STATE_PAUSED), VM_TRANSITION_ALREADY);
        /* Starting what runs is busy, everything else not listed is stale. */
        assert_int_equal(vm_request_check(VM_REQUEST_START, VM_STATE_RUNNING), -EBUSY);
        assert_int_equal(vm_request_check(VM_REQUEST_START, VM_STATE_PAUSED), -EBUSY);
        assert_int_equal(vm_request_check(VM_REQUEST_START, VM_STATE_INCOMING), -ESTALE);
        assert_int_equal(vm_request_check(VM_REQUEST_PAUSE, VM_STATE_CREATED), -ESTALE);
        assert_int_equal(vm_request_check(VM_REQUEST_SHUTDOWN, VM_STATE_INCOMING), -ESTALE);
        assert_int_equal(vm_request_check(VM_REQUEST_STOP, VM_STATE_MIGRATED), -ESTALE);
        assert_int_equal(vm_request_check(VM_REQUEST_STOP, VM_STATE_INCOMING), 1);
        assert_int_equal(vm_request_check(VM_REQUEST_RESUME, VM_STATE_MIGRATION_UNKNOWN), 1);
        assert_int_equal(vm_request_check(_VM_REQUEST_MAX, VM_STATE_RUNNING), -ESTALE);
        assert_int_equal(vm_request_check(VM_REQUEST_STOP, _VM_STATE_MAX), -ESTALE);
        /* Nothing is allowed in 'migrated' but Delete (not a lifecycle request). */
        for (int r = 0; r < _VM_REQUEST_MAX; r++)
                assert_int_equal(vm_request_transition((VmRequest)r, VM_STATE_MIGRATED), VM_TRANSITION_INVALID);
        (void)state;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_allowed_lists),
                cmocka_unit_test(test_core_answers),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
