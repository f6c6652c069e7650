/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The state contract of the devices KVM holds (PICs, IOAPIC, PIT, clock, each vCPU's
 * LAPIC and registers), on a real VM running our test guest: for every entry of the device
 * table, save -> load -> save gives the same bytes (except what time moves on: the
 * clock, the PIT's load time, the LAPIC's current count, the TSC), a wrong version or size
 * is refused with the device named, and the guest goes on after all were loaded. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "config.h"
#include "console-watch.h"
#include "device-test.h"
#include "test-util.h"
#include "vm-internal.h"

static char *guest;
static char tmpdir[] = "/tmp/vmmd-test-devkvm-XXXXXX";

static size_t save_one(const Device *d, uint8_t **ret) {
        _cleanup_free_ uint8_t *buf = NULL;
        StateSection s = device_test_save(d, &buf);

        *ret = malloc(s.size);
        assert_non_null(*ret);
        memcpy(*ret, s.data, s.size);
        return s.size;
}

/* Blanks what moves with time between two saves. */
static void mask_time(const Device *d, uint8_t *p, size_t size) {
        if (d->ops == &clock_device_ops)
                memset(p, 0, size);
        else if (d->ops == &pit_device_ops) {
                struct kvm_pit_state2 pit;
                memcpy(&pit, p, sizeof pit);
                for (int i = 0; i < 3; i++)
                        pit.channels[i].count_load_time = 0;
                memcpy(p, &pit, sizeof pit);
        } else if (d->ops == &lapic_device_ops)
                memset(p + 0x390, 0, 4); /* timer current count */
        else if (d->ops == &msrs_device_ops) {
                for (size_t off = 16; off + 16 <= size; off += 16) {
                        uint32_t index;
                        memcpy(&index, p + off, 4);
                        if (index == 0x10) /* IA32_TSC */
                                memset(p + off + 8, 0, 8);
                }
        }
}

static void test_kvm_device_contracts(void **state) {
        char con[256], *json = NULL, *err = NULL;
        VmConfig *c = NULL;
        Vm *vm = NULL;
        Heartbeat hb = {}, hb2 = {};
        unsigned n_checked = 0;

        snprintf(con, sizeof con, "%s/con.log", tmpdir);
        assert_true(asprintf(&json,
                             "{\"vcpus\":2,\"memory_mib\":64,\"kernel\":\"%s\",\"cmdline\":\"work=idle hb=100\","
                             "\"serial\":{\"mode\":\"file\",\"path\":\"%s\"}}",
                             guest, con) > 0);
        if (vm_config_parse(json, &c, &err) < 0)
                fail_msg("config rejected: %s", err);
        free(json);
        assert_int_equal(vm_new("devkvm", c, &vm), 0);
        assert_int_equal(vm_start(vm), 0);
        assert_true(wait_for_heartbeat(con, 3, 60000, &hb));
        assert_int_equal(vm_pause(vm), 0);
        assert_true(last_heartbeat(con, &hb));

        assert_int_equal(vm->n_devices, 7 + 2 * 9);
        for (unsigned i = 0; i < vm->n_devices; i++) {
                const Device *d = &vm->devices[i];
                _cleanup_free_ uint8_t *s1 = NULL, *s2 = NULL;
                size_t n1 = save_one(d, &s1), n2;
                StateSection sec = { .id = d->ops->section, .version = d->ops->version,
                                     .instance = d->instance, .size = (uint32_t)n1, .data = s1 };
                char msg[256] = "";

                assert_int_equal(device_check(d, &sec, NULL, 0), 0);
                assert_int_equal(device_load(d, &sec), 0);
                n2 = save_one(d, &s2);
                assert_int_equal(n1, n2);
                mask_time(d, s1, n1);
                mask_time(d, s2, n2);
                if (memcmp(s1, s2, n1) != 0)
                        fail_msg("%s/%u: save -> load -> save differs", d->ops->name, d->instance);

                sec.version = d->ops->version + 1;
                assert_int_equal(device_check(d, &sec, msg, sizeof msg), -EBADMSG);
                if (!strstr(msg, d->ops->name) || !strstr(msg, "section version"))
                        fail_msg("%s: refusal says '%s'", d->ops->name, msg);
                sec.version = d->ops->version;
                if (!d->ops->variable) {
                        sec.size = (uint32_t)n1 - 4;
                        assert_int_equal(device_check(d, &sec, msg, sizeof msg), -EBADMSG);
                        assert_non_null(strstr(msg, d->ops->name));
                }
                n_checked++;
        }
        assert_int_equal(n_checked, 25);

        /* Everything loaded back: the guest goes on where it was. */
        assert_int_equal(vm_resume(vm), 0);
        assert_true(wait_for_heartbeat(con, hb.seq + 3, 60000, &hb2));
        assert_int_equal(hb2.corrupt, 0);

        /* A whole stream with one section of an unknown version is refused naming it. */
        uint8_t *blob;
        size_t size;
        assert_int_equal(vm_pause(vm), 0);
        assert_int_equal(vm_save_state(vm, &blob, &size), 0);
        Vm *dst = NULL;
        assert_int_equal(vm_new("devkvm-dst", c, &dst), 0);
        assert_int_equal(vm_prepare_incoming(dst), 0);
        {
                StateReader r;
                StateSection s;
                size_t off = 24;
                assert_int_equal(state_reader_init(&r, blob, size), 0);
                while (state_reader_next(&r, &s) > 0) {
                        if (s.id == SEC_VCPU_LAPIC && s.instance == 1)
                                blob[off + 4] = 7; /* version 7 */
                        off += 16 + ((s.size + 7) & ~7u);
                }
        }
        assert_int_equal(vm_restore_state(dst, blob, size), -EBADMSG);
        assert_string_equal(vm_get_state_error(dst), "lapic of vCPU 1: section version 7, this build reads 1");
        /* The rehearsal's trial says the same, though it puts the VM's own state back. */
        uint64_t apply_us;
        assert_int_equal(vm_restore_state_trial(dst, blob, size, &apply_us), -EBADMSG);
        assert_string_equal(vm_get_state_error(dst), "lapic of vCPU 1: section version 7, this build reads 1");
        free(blob);
        vm_free(dst);
        assert_int_equal(vm_stop(vm), 0);
        vm_free(vm);
        vm_config_free(c);
        (void)state;
}

static int setup(void **state) {
        guest = test_guest_path();
        assert_non_null(mkdtemp(tmpdir));
        return 0;
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        (void)!system(cmd);
        free(guest);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_kvm_device_contracts),
        };
        require_kvm();
        return cmocka_run_group_tests(tests, setup, teardown);
}
