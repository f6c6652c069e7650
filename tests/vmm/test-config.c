/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "test-util.h"

static char *kernel_path; /* a real PVH ELF (the test guest) */
static char not_a_kernel[] = "/tmp/vmmd-test-notkernel-XXXXXX";

_printf_(1, 2) static char *cfg(const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
        assert_true(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        return s;
}

/* Parses and expects failure whose message starts with 'prefix'. */
static void expect_error(const char *json, const char *prefix) {
        VmConfig *c = NULL;
        char *err = NULL;
        int r = vm_config_parse(json, &c, &err);
        if (r >= 0)
                fail_msg("config unexpectedly accepted: %s", json);
        assert_null(c);
        assert_non_null(err);
        if (strncmp(err, prefix, strlen(prefix)) != 0)
                fail_msg("error \"%s\" does not start with \"%s\"", err, prefix);
        free(err);
}

static void test_valid(void **state) {
        _cleanup_free_ char *j = cfg("{\"vcpus\":2,\"memory_mib\":64,\"kernel\":\"%s\","
                                     "\"cmdline\":\"work=idle\",\"serial\":{\"mode\":\"pty\"}}",
                                     kernel_path);
        VmConfig *c = NULL;
        char *err = NULL;
        assert_int_equal(vm_config_parse(j, &c, &err), 0);
        assert_null(err);
        assert_int_equal(c->vcpus, 2);
        assert_int_equal(c->memory_mib, 64);
        assert_string_equal(c->kernel, kernel_path);
        assert_string_equal(c->cmdline, "work=idle");
        assert_int_equal(c->serial_mode, SERIAL_MODE_PTY);
        assert_int_equal(c->kernel_format, KERNEL_FORMAT_PVH_ELF);

        /* The canonical JSON parses back to the same config. */
        _cleanup_free_ char *again = vm_config_to_json(c);
        VmConfig *c2 = NULL;
        assert_int_equal(vm_config_parse(again, &c2, NULL), 0);
        assert_int_equal(c2->vcpus, 2);
        assert_string_equal(c2->cmdline, "work=idle");
        vm_config_free(c2);
        vm_config_free(c);
}

static void test_defaults(void **state) {
        _cleanup_free_ char *j = cfg("{\"memory_mib\":32,\"kernel\":\"%s\"}", kernel_path);
        VmConfig *c = NULL;
        assert_int_equal(vm_config_parse(j, &c, NULL), 0);
        assert_int_equal(c->vcpus, 1);
        assert_string_equal(c->cmdline, "");
        assert_int_equal(c->serial_mode, SERIAL_MODE_NONE);
        vm_config_free(c);
}

static void test_malformed(void **state) {
        expect_error("{\"vcpus\": 1,", "config: malformed JSON");
        expect_error("{\"vcpus\": 1} trailing", "config: malformed JSON");
        expect_error("", "config: malformed JSON");
        expect_error("[1,2]", "config: expected a JSON object");
        expect_error("\"x\"", "config: expected a JSON object");
}

static void test_unknown_key(void **state) {
        _cleanup_free_ char *j = cfg("{\"memory_mib\":32,\"kernel\":\"%s\",\"cpus\":1}", kernel_path);
        expect_error(j, "cpus: unknown key");
        _cleanup_free_ char *j2 = cfg("{\"memory_mib\":32,\"kernel\":\"%s\",\"serial\":{\"mode\":\"pty\",\"baud\":9600}}",
                                      kernel_path);
        expect_error(j2, "serial.baud: unknown key");
}

static void test_wrong_type(void **state) {
        _cleanup_free_ char *a = cfg("{\"memory_mib\":\"64\",\"kernel\":\"%s\"}", kernel_path);
        expect_error(a, "memory_mib: expected an integer, got string");
        _cleanup_free_ char *b = cfg("{\"memory_mib\":64,\"vcpus\":1.5,\"kernel\":\"%s\"}", kernel_path);
        expect_error(b, "vcpus: expected an integer, got double");
        expect_error("{\"memory_mib\":64,\"kernel\":42}", "kernel: expected a string, got int");
        _cleanup_free_ char *c = cfg("{\"memory_mib\":64,\"kernel\":\"%s\",\"serial\":\"pty\"}", kernel_path);
        expect_error(c, "serial: expected an object, got string");
        _cleanup_free_ char *d = cfg("{\"memory_mib\":64,\"kernel\":\"%s\",\"cmdline\":null}", kernel_path);
        expect_error(d, "cmdline: expected a string, got null");
}

static void test_ranges(void **state) {
        _cleanup_free_ char *zero = cfg("{\"memory_mib\":0,\"kernel\":\"%s\"}", kernel_path);
        expect_error(zero, "memory_mib: must be between 16 and");
        _cleanup_free_ char *neg = cfg("{\"memory_mib\":-5,\"kernel\":\"%s\"}", kernel_path);
        expect_error(neg, "memory_mib: must be between 16 and");
        _cleanup_free_ char *huge = cfg("{\"memory_mib\":99999999999,\"kernel\":\"%s\"}", kernel_path);
        expect_error(huge, "memory_mib: must be between 16 and");
        _cleanup_free_ char *more = cfg("{\"memory_mib\":1048576,\"kernel\":\"%s\"}", kernel_path);
        expect_error(more, "memory_mib: 1048576 MiB is more than the host has");
        _cleanup_free_ char *v0 = cfg("{\"vcpus\":0,\"memory_mib\":64,\"kernel\":\"%s\"}", kernel_path);
        expect_error(v0, "vcpus: must be between 1 and 64");
        _cleanup_free_ char *v9 = cfg("{\"vcpus\":65,\"memory_mib\":64,\"kernel\":\"%s\"}", kernel_path);
        expect_error(v9, "vcpus: must be between 1 and 64");
        _cleanup_free_ char *nomem = cfg("{\"kernel\":\"%s\"}", kernel_path);
        expect_error(nomem, "memory_mib: required");
}

static void test_kernel_errors(void **state) {
        expect_error("{\"memory_mib\":64}", "kernel: required");
        expect_error("{\"memory_mib\":64,\"kernel\":\"/nonexistent/vmlinux\"}",
                     "kernel: cannot open /nonexistent/vmlinux: No such file or directory");
        expect_error("{\"memory_mib\":64,\"kernel\":\"relative/path\"}", "kernel: must be an absolute path");
        expect_error("{\"memory_mib\":64,\"kernel\":\"/tmp\"}", "kernel: /tmp is not a regular file");
        _cleanup_free_ char *j = cfg("{\"memory_mib\":64,\"kernel\":\"%s\"}", not_a_kernel);
        expect_error(j, "kernel: ");
        VmConfig *c = NULL;
        char *err = NULL;
        assert_true(vm_config_parse(j, &c, &err) < 0);
        assert_non_null(strstr(err, "neither an ELF with a PVH entry note"));
        free(err);
        _cleanup_free_ char *k = cfg("{\"memory_mib\":64,\"kernel\":\"%s\",\"initramfs\":\"/nonexistent/initrd\"}",
                                     kernel_path);
        expect_error(k, "initramfs: cannot open /nonexistent/initrd");
}

/* A config from a migration source: the same checks, but none of its files is opened. */
static void test_no_files(void **state) {
        VmConfig *c = NULL;
        char *err = NULL;

        assert_int_equal(vm_config_parse_flags("{\"memory_mib\":64,\"kernel\":\"/nonexistent/vmlinux\","
                                               "\"initramfs\":\"/nonexistent/initrd\"}",
                                               VM_CONFIG_PARSE_NO_FILES, &c, &err),
                         0);
        assert_int_equal(c->kernel_format, KERNEL_FORMAT_UNKNOWN);
        assert_string_equal(c->kernel, "/nonexistent/vmlinux");
        vm_config_free(c);
        c = NULL;
        /* Everything else is checked as always. */
        assert_true(vm_config_parse_flags("{\"memory_mib\":8,\"kernel\":\"/x\"}", VM_CONFIG_PARSE_NO_FILES, &c,
                                          &err) < 0);
        assert_non_null(strstr(err, "memory_mib: must be between"));
        free(err);
        err = NULL;
        assert_true(vm_config_parse_flags("{\"memory_mib\":64,\"kernel\":\"x\"}", VM_CONFIG_PARSE_NO_FILES, &c,
                                          &err) < 0);
        assert_non_null(strstr(err, "kernel: must be an absolute path"));
        free(err);
        assert_null(c);
}

static void test_serial(void **state) {
        _cleanup_free_ char *a = cfg("{\"memory_mib\":64,\"kernel\":\"%s\",\"serial\":{\"mode\":\"file\"}}", kernel_path);
        expect_error(a, "serial.path: required with mode \"file\"");
        _cleanup_free_ char *b = cfg("{\"memory_mib\":64,\"kernel\":\"%s\",\"serial\":{\"mode\":\"tcp\"}}", kernel_path);
        expect_error(b, "serial.mode: must be \"file\", \"pty\" or \"none\"");
        _cleanup_free_ char *c = cfg("{\"memory_mib\":64,\"kernel\":\"%s\",\"serial\":{\"mode\":\"pty\",\"path\":\"/tmp/x\"}}",
                                     kernel_path);
        expect_error(c, "serial.path: only valid with mode \"file\"");
}

static void test_limits(void **state) {
        size_t n = VM_CONFIG_MAX_JSON + 10;
        _cleanup_free_ char *big = malloc(n + 1);
        memset(big, ' ', n);
        big[0] = '{';
        big[n - 1] = '}';
        big[n] = 0;
        expect_error(big, "config: larger than");

        _cleanup_free_ char *longcmd = malloc(VM_CONFIG_MAX_CMDLINE + 10);
        memset(longcmd, 'a', VM_CONFIG_MAX_CMDLINE + 9);
        longcmd[VM_CONFIG_MAX_CMDLINE + 9] = 0;
        _cleanup_free_ char *j = cfg("{\"memory_mib\":64,\"kernel\":\"%s\",\"cmdline\":\"%s\"}", kernel_path, longcmd);
        expect_error(j, "cmdline: longer than");
        expect_error("{\"memory_mib\":64,\"kernel\":\"/a\\u0000b\"}", "kernel: contains a NUL byte");
}

static void test_merge(void **state) {
        char *out = NULL, *err = NULL;
        assert_int_equal(vm_config_merge_json("{\"vcpus\":1,\"serial\":{\"mode\":\"file\",\"path\":\"/a\"}}",
                                              "{\"serial\":{\"path\":\"/b\"},\"cmdline\":\"x\"}", &out, &err),
                         0);
        assert_non_null(strstr(out, "\"path\":\"\\/b\"") ?: strstr(out, "\"path\":\"/b\""));
        assert_non_null(strstr(out, "\"mode\":\"file\""));
        assert_non_null(strstr(out, "\"cmdline\":\"x\""));
        free(out);
        assert_true(vm_config_merge_json("{}", "[1]", &out, &err) < 0);
        assert_string_equal(err, "config overlay: expected a JSON object");
        free(err);
}

static int setup(void **state) {
        FILE *f;
        int fd;

        kernel_path = test_guest_path();
        fd = mkstemp(not_a_kernel);
        assert_true(fd >= 0);
        f = fdopen(fd, "w");
        fputs("this is not a kernel\n", f);
        fclose(f);
        return 0;
}

static int teardown(void **state) {
        unlink(not_a_kernel);
        free(kernel_path);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_valid),       cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_malformed),   cmocka_unit_test(test_unknown_key),
                cmocka_unit_test(test_wrong_type),  cmocka_unit_test(test_ranges),
                cmocka_unit_test(test_kernel_errors), cmocka_unit_test(test_no_files), cmocka_unit_test(test_serial),
                cmocka_unit_test(test_limits),      cmocka_unit_test(test_merge),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
