/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The Manager core without a bus: names, limits, create/find/delete, state rules of the
 * lifecycle requests, observers, job ids, migration settings. No guest runs (no KVM
 * needed). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "manager.h"
#include "vm-name.h"

static char tmpdir[] = "/tmp/vmmd-test-manager-XXXXXX";
static char kernel[256];

/* The test guest when meson gives it, else a minimal PVH ELF (validated, never booted). */
static int make_kernel(void) {
        static const uint8_t note[] = { 4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, 'X', 'e', 'n', 0,
                                        0, 0, 0x10, 0 };
        uint8_t elf[64 + 2 * 56 + sizeof note + 16] = { 0x7f, 'E', 'L', 'F', 2, 1, 1 };
        uint8_t *ph = elf + 64;
        const char *guest = getenv("VMMD_TEST_GUEST");
        int fd;

        if (guest && access(guest, R_OK) == 0) {
                snprintf(kernel, sizeof kernel, "%s", guest);
                return 0;
        }

#define PUT16(p, v) do { uint16_t _v = (v); memcpy((p), &_v, 2); } while (0)
#define PUT32(p, v) do { uint32_t _v = (v); memcpy((p), &_v, 4); } while (0)
#define PUT64(p, v) do { uint64_t _v = (v); memcpy((p), &_v, 8); } while (0)
        PUT16(elf + 16, 2);         /* ET_EXEC */
        PUT16(elf + 18, 62);        /* EM_X86_64 */
        PUT32(elf + 20, 1);
        PUT64(elf + 24, 0x100000);  /* entry */
        PUT64(elf + 32, 64);        /* phoff */
        PUT16(elf + 52, 64);        /* ehsize */
        PUT16(elf + 54, 56);        /* phentsize */
        PUT16(elf + 56, 2);         /* phnum */
        /* PT_LOAD: 16 bytes of hlt */
        PUT32(ph, 1);
        PUT32(ph + 4, 5);
        PUT64(ph + 8, sizeof elf - 16);
        PUT64(ph + 16, 0x100000);
        PUT64(ph + 24, 0x100000);
        PUT64(ph + 32, 16);
        PUT64(ph + 40, 16);
        PUT64(ph + 48, 0x1000);
        /* PT_NOTE: XEN_ELFNOTE_PHYS32_ENTRY */
        PUT32(ph + 56, 4);
        PUT32(ph + 60, 4);
        PUT64(ph + 64, 64 + 2 * 56);
        PUT64(ph + 88, sizeof note);
        PUT64(ph + 96, sizeof note);
        PUT64(ph + 104, 4);
        memcpy(elf + 64 + 2 * 56, note, sizeof note);
        memset(elf + sizeof elf - 16, 0xf4, 16);

        snprintf(kernel, sizeof kernel, "%s/pvh.elf", tmpdir);
        fd = open(kernel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        if (write(fd, elf, sizeof elf) != (ssize_t)sizeof elf) {
                close(fd);
                return -EIO;
        }
        close(fd);
        return 0;
}

static char *config(const char *name, const char *serial_mode) {
        char *s = NULL;

        if (strcmp(serial_mode, "file") == 0)
                assert_true(asprintf(&s,
                                     "{\"vcpus\": 2, \"memory_mib\": 32, \"kernel\": \"%s\", "
                                     "\"serial\": {\"mode\": \"file\", \"path\": \"%s/%s.log\"}}",
                                     kernel, tmpdir, name) > 0);
        else
                assert_true(asprintf(&s,
                                     "{\"vcpus\": 2, \"memory_mib\": 32, \"kernel\": \"%s\", "
                                     "\"serial\": {\"mode\": \"%s\"}}",
                                     kernel, serial_mode) > 0);
        return s;
}

static int setup(void **state) {
        sd_event *e = NULL;
        Manager *m = NULL;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(manager_new(e, &m), 0);
        sd_event_unref(e); /* the manager holds a reference */
        *state = m;
        return 0;
}

static int teardown(void **state) {
        manager_free(*state);
        return 0;
}

static int create(Manager *m, const char *name, ManagedVm **ret, char **ret_error) {
        _cleanup_free_ char *c = config(name, "file");
        return manager_create_vm(m, name, c, ret, ret_error);
}

static void test_names(void **state) {
        char long_ok[VM_NAME_MAX + 1], too_long[VM_NAME_MAX + 2];

        memset(long_ok, 'a', VM_NAME_MAX);
        long_ok[VM_NAME_MAX] = 0;
        memset(too_long, 'a', VM_NAME_MAX + 1);
        too_long[VM_NAME_MAX + 1] = 0;

        assert_true(vm_name_is_valid("web"));
        assert_true(vm_name_is_valid("A-b_c.9"));
        assert_true(vm_name_is_valid("9lives"));
        assert_true(vm_name_is_valid(long_ok));
        assert_false(vm_name_is_valid(too_long));
        assert_false(vm_name_is_valid(""));
        assert_false(vm_name_is_valid(NULL));
        assert_false(vm_name_is_valid(".hidden"));
        assert_false(vm_name_is_valid(".."));
        assert_false(vm_name_is_valid("-x"));
        assert_false(vm_name_is_valid("a b"));
        assert_false(vm_name_is_valid("a/b"));
        assert_false(vm_name_is_valid("caf\xc3\xa9"));
}

static void test_create_find_delete(void **state) {
        Manager *m = *state;
        _cleanup_free_ char *error = NULL;
        ManagedVm *v = NULL;

        assert_int_equal(create(m, "one", &v, &error), 0);
        assert_non_null(v);
        assert_ptr_equal(manager_find_vm(m, "one"), v);
        assert_null(manager_find_vm(m, "two"));
        assert_int_equal(manager_count_vms(m), 1);
        assert_int_equal(manager_count_active_vms(m), 0);
        assert_string_equal(managed_vm_get_name(v), "one");
        assert_int_equal(managed_vm_get_state(v), VM_STATE_CREATED);
        assert_non_null(strstr(v->config_json, "\"memory_mib\""));
        assert_int_equal(v->job_id, 0);

        assert_int_equal(create(m, "one", NULL, &error), -EEXIST);
        assert_non_null(strstr(error, "'one'"));

        assert_int_equal(manager_delete_vm(m, v, NULL), 0);
        assert_null(manager_find_vm(m, "one"));
        assert_int_equal(manager_count_vms(m), 0);
}

static void test_bad_input(void **state) {
        Manager *m = *state;
        char *error = NULL;
        _cleanup_free_ char *big = malloc(VM_CONFIG_MAX_JSON + 2);

        assert_int_equal(manager_create_vm(m, "bad name", "{}", NULL, &error), -EINVAL);
        assert_non_null(strstr(error, "Invalid VM name"));
        free(error);

        assert_int_equal(manager_create_vm(m, "x", "{", NULL, &error), -EINVAL);
        assert_non_null(strstr(error, "Invalid config for VM 'x'"));
        free(error);

        assert_int_equal(manager_create_vm(m, "x", "{\"vcpus\": 0}", NULL, &error), -EINVAL);
        assert_non_null(strstr(error, "vcpus"));
        free(error);

        memset(big, ' ', VM_CONFIG_MAX_JSON + 1);
        big[VM_CONFIG_MAX_JSON + 1] = 0;
        assert_int_equal(manager_create_vm(m, "x", big, NULL, &error), -E2BIG);
        free(error);

        assert_int_equal(manager_count_vms(m), 0);
}

static void test_limit(void **state) {
        Manager *m = *state;
        _cleanup_free_ char *error = NULL;

        assert_int_equal(manager_set_max_vms(m, 0), -ERANGE);
        assert_int_equal(manager_set_max_vms(m, MANAGER_MAX_VMS_LIMIT + 1), -ERANGE);
        assert_int_equal(manager_set_max_vms(m, 2), 0);
        assert_int_equal(create(m, "a", NULL, NULL), 0);
        assert_int_equal(create(m, "b", NULL, NULL), 0);
        assert_int_equal(create(m, "c", NULL, &error), -ENOSPC);
        assert_int_equal(manager_can_create_vm(m, "c", 10, NULL), -ENOSPC);
        assert_int_equal(manager_delete_vm(m, manager_find_vm(m, "a"), NULL), 0);
        assert_int_equal(create(m, "c", NULL, NULL), 0);
        /* Creation order is kept. */
        assert_string_equal(managed_vm_get_name(m->vms[0]), "b");
        assert_string_equal(managed_vm_get_name(m->vms[1]), "c");
}

static void test_actions_need_the_right_state(void **state) {
        Manager *m = *state;
        ManagedVm *v;

        assert_int_equal(create(m, "idle", &v, NULL), 0);
        for (VmAction a = VM_ACTION_PAUSE; a < _VM_ACTION_MAX; a++) {
                _cleanup_free_ char *error = NULL;

                assert_int_equal(managed_vm_act(v, a, &error), -EBADFD);
                assert_non_null(strstr(error, "it is created"));
                assert_int_equal(managed_vm_get_state(v), VM_STATE_CREATED);
        }
        assert_int_equal(managed_vm_abort_job(v, NULL), -EBADFD);

        assert_true(vm_action_allowed_in(VM_ACTION_START, VM_STATE_STOPPED));
        assert_true(vm_action_allowed_in(VM_ACTION_START, VM_STATE_CRASHED));
        assert_false(vm_action_allowed_in(VM_ACTION_START, VM_STATE_RUNNING));
        assert_true(vm_action_allowed_in(VM_ACTION_RESUME, VM_STATE_MIGRATION_UNKNOWN));
        assert_true(vm_action_allowed_in(VM_ACTION_STOP, VM_STATE_INCOMING));
        assert_false(vm_action_allowed_in(VM_ACTION_STOP, VM_STATE_STOPPED));
        assert_false(vm_action_allowed_in(VM_ACTION_SHUTDOWN, VM_STATE_INCOMING));
        assert_string_equal(vm_action_to_string(VM_ACTION_SHUTDOWN), "shutdown");
        assert_int_equal(vm_action_from_string("resume"), VM_ACTION_RESUME);
        assert_int_equal(vm_action_from_string("reboot"), _VM_ACTION_INVALID);
}

static void test_start(void **state) {
        Manager *m = *state;
        _cleanup_free_ char *error = NULL;
        ManagedVm *v;
        int r;

        if (access("/dev/kvm", R_OK | W_OK) == 0)
                skip(); /* guests run in tests/dbus/test-lifecycle.py */

        assert_int_equal(create(m, "nokvm", &v, NULL), 0);
        r = managed_vm_act(v, VM_ACTION_START, &error);
        assert_true(r < 0);
        assert_non_null(strstr(error, "/dev/kvm"));
        assert_int_not_equal(managed_vm_get_state(v), VM_STATE_RUNNING);
}

static void test_shutting_down(void **state) {
        Manager *m = *state;
        _cleanup_free_ char *e1 = NULL, *e2 = NULL;
        ManagedVm *v;

        assert_int_equal(create(m, "early", &v, NULL), 0);
        manager_set_shutting_down(m, true);
        assert_int_equal(create(m, "late", NULL, &e1), -EBUSY);
        assert_int_equal(managed_vm_act(v, VM_ACTION_START, &e2), -EBUSY);
        assert_non_null(strstr(e2, "shutting down"));
        manager_set_shutting_down(m, false);
}

typedef struct Seen {
        char log[256];
} Seen;

static void seen_add(Seen *s, const char *what, const char *name) {
        size_t n = strlen(s->log);
        snprintf(s->log + n, sizeof s->log - n, "%s:%s ", what, name);
}
static void on_added(Manager *m, ManagedVm *v, void *u) {
        seen_add(u, "added", managed_vm_get_name(v));
}
static void on_removing(Manager *m, ManagedVm *v, void *u) {
        assert_ptr_equal(manager_find_vm(m, managed_vm_get_name(v)), v);
        seen_add(u, "removing", managed_vm_get_name(v));
}
static void on_removed(Manager *m, const char *name, void *u) {
        assert_null(manager_find_vm(m, name));
        seen_add(u, "removed", name);
}

static void test_observers(void **state) {
        static const ManagerObserver ops = {
                .vm_added = on_added,
                .vm_removing = on_removing,
                .vm_removed = on_removed,
        };
        Manager *m = *state;
        Seen seen = {}, other = {};
        ManagedVm *v;

        assert_int_equal(manager_add_observer(m, &ops, &seen), 0);
        assert_int_equal(manager_add_observer(m, &ops, &other), 0);
        assert_int_equal(create(m, "watched", &v, NULL), 0);
        assert_int_equal(manager_delete_vm(m, v, NULL), 0);
        assert_string_equal(seen.log, "added:watched removing:watched removed:watched ");
        assert_string_equal(other.log, seen.log);

        manager_remove_observer(m, &ops, &other);
        assert_int_equal(create(m, "again", NULL, NULL), 0);
        assert_string_equal(other.log, "added:watched removing:watched removed:watched ");
        manager_remove_observer(m, &ops, &seen);

        for (int i = 0; i < MANAGER_OBSERVERS_MAX; i++)
                assert_int_equal(manager_add_observer(m, &ops, &seen), 0);
        assert_int_equal(manager_add_observer(m, &ops, &seen), -ENOSPC);
        for (int i = 0; i < MANAGER_OBSERVERS_MAX; i++)
                manager_remove_observer(m, &ops, &seen);
}

static void test_job_ids(void **state) {
        Manager *m = *state;

        assert_int_equal(manager_allocate_job_id(m), 1);
        assert_int_equal(manager_allocate_job_id(m), 2);
        m->last_job_id = UINT32_MAX - 1;
        assert_int_equal(manager_allocate_job_id(m), UINT32_MAX);
        assert_int_equal(manager_allocate_job_id(m), 0); /* never reused */
}

static void test_migration_settings(void **state) {
        Manager *m = *state;
        ManagedVm *v;

        assert_int_equal(create(m, "tune", &v, NULL), 0);
        assert_int_equal(v->max_downtime_ms, MANAGED_VM_MAX_DOWNTIME_MS_DEFAULT);
        assert_int_equal(managed_vm_set_max_downtime(v, 0, NULL), -ERANGE);
        assert_int_equal(managed_vm_set_max_downtime(v, MANAGED_VM_MAX_DOWNTIME_MS_MAX + 1, NULL),
                         -ERANGE);
        assert_int_equal(managed_vm_set_max_downtime(v, 50, NULL), 0);
        assert_int_equal(v->max_downtime_ms, 50);
        assert_int_equal(managed_vm_set_max_speed(v, 0, NULL), 0);
        assert_int_equal(managed_vm_set_max_speed(v, 1000, NULL), 0);
        assert_int_equal(v->max_speed_mibps, 1000);
        assert_int_equal(managed_vm_set_max_speed(v, MANAGED_VM_MAX_SPEED_MIBPS_MAX + 1, NULL),
                         -ERANGE);
}

static void test_console(void **state) {
        Manager *m = *state;
        _cleanup_free_ char *c = config("mute", "none"), *error = NULL;
        _cleanup_close_ int fd = -EBADF;
        ManagedVm *v, *w;

        assert_int_equal(create(m, "con", &v, NULL), 0);
        assert_int_equal(managed_vm_open_console(v, &fd, NULL), 0);
        assert_true(fd >= 0);

        assert_int_equal(manager_create_vm(m, "mute", c, &w, NULL), 0);
        assert_int_equal(managed_vm_open_console(w, &fd, &error), -ENODEV);
        assert_non_null(strstr(error, "no console"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_names),
                cmocka_unit_test_setup_teardown(test_create_find_delete, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
                cmocka_unit_test_setup_teardown(test_limit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_actions_need_the_right_state, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_start, setup, teardown),
                cmocka_unit_test_setup_teardown(test_shutting_down, setup, teardown),
                cmocka_unit_test_setup_teardown(test_observers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_job_ids, setup, teardown),
                cmocka_unit_test_setup_teardown(test_migration_settings, setup, teardown),
                cmocka_unit_test_setup_teardown(test_console, setup, teardown),
        };
        char cmd[sizeof tmpdir + 16];
        int r;

        if (!mkdtemp(tmpdir) || make_kernel() < 0) {
                perror("test set-up");
                return EXIT_FAILURE;
        }
        r = cmocka_run_group_tests(tests, NULL, NULL);
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        (void)!system(cmd);
        return r;
}
