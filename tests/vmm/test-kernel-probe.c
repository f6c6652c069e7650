/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "kernel-probe.h"
#include "test-util.h"

static uint8_t *guest_elf;
static size_t guest_elf_size;

static void test_guest_elf(void **state) {
        PvhElfInfo info;
        assert_int_equal(pvh_elf_parse(guest_elf, guest_elf_size, &info), 0);
        assert_true(info.entry >= 0x100000);
        assert_true(info.n_segments >= 1);
        assert_true(info.segments[0].paddr >= 0x100000);
}

static void test_truncations(void **state) {
        /* Every prefix of a valid ELF is rejected or parsed, never read out of bounds
         * (run under ASan/valgrind setups to make the "never" checkable). */
        for (size_t n = 0; n < guest_elf_size; n += (n < 4096 ? 1 : 997)) {
                uint8_t *copy = malloc(n ? n : 1);
                PvhElfInfo info;
                memcpy(copy, guest_elf, n);
                int r = pvh_elf_parse(copy, n, &info);
                assert_true(r == 0 || r == -ENOEXEC || r == -EBADMSG || r == -ENOENT);
                free(copy);
        }
}

static void test_not_elf(void **state) {
        uint8_t junk[4096] = "hello";
        PvhElfInfo info;
        BzImageInfo bz;
        assert_int_equal(pvh_elf_parse(junk, sizeof junk, &info), -ENOEXEC);
        assert_int_equal(bzimage_parse(junk, sizeof junk, &bz), -ENOEXEC);
}

static void test_elf_without_note(void **state) {
        /* Our own test binary is an ELF64 x86-64 without a PVH note. */
        _cleanup_close_ int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        struct stat st;
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        uint8_t *buf = malloc((size_t)st.st_size);
        assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
        PvhElfInfo info;
        int r = pvh_elf_parse(buf, (size_t)st.st_size, &info);
        assert_true(r == -ENOENT || r == -EBADMSG);
        free(buf);
}

static void make_bzimage(uint8_t *b, size_t size, uint16_t version, uint16_t xlf) {
        memset(b, 0, size);
        b[0x1f1] = 4; /* setup_sects */
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        memcpy(b + 0x202, "HdrS", 4);
        b[0x206] = (uint8_t)version;
        b[0x207] = (uint8_t)(version >> 8);
        b[0x211] = 1;
        b[0x236] = (uint8_t)xlf;
        b[0x230] = 0x00; b[0x231] = 0x00; b[0x232] = 0x20; /* 2 MiB alignment */
        b[0x258 + 3] = 0x01; /* pref_address 16 MiB */
        b[0x260 + 2] = 0x10; /* init_size 1 MiB */
}

static void test_bzimage(void **state) {
        size_t size = 64 * 1024;
        uint8_t *b = malloc(size);
        BzImageInfo bz;

        make_bzimage(b, size, 0x020f, 1);
        assert_int_equal(bzimage_parse(b, size, &bz), 0);
        assert_int_equal(bz.version, 0x020f);
        assert_int_equal(bz.setup_size, 5 * 512);
        assert_int_equal(bz.kernel_offset, 5 * 512);
        assert_int_equal(bz.kernel_size, size - 5 * 512);
        assert_int_equal(bz.pref_address, 0x1000000);
        assert_int_equal(bz.kernel_alignment, 0x200000);

        make_bzimage(b, size, 0x0208, 1);
        assert_int_equal(bzimage_parse(b, size, &bz), -EPROTONOSUPPORT);
        make_bzimage(b, size, 0x020f, 0);
        assert_int_equal(bzimage_parse(b, size, &bz), -EPROTONOSUPPORT);
        make_bzimage(b, size, 0x020f, 1);
        b[0x1f1] = 200; /* setup larger than the file */
        assert_int_equal(bzimage_parse(b, 0x1000, &bz), -EBADMSG);
        make_bzimage(b, size, 0x020f, 1);
        b[0x24c + 3] = 0x7f; /* payload beyond the end */
        assert_int_equal(bzimage_parse(b, size, &bz), -EBADMSG);
        free(b);
}

static void test_probe_file(void **state) {
        KernelFormat f;
        _cleanup_free_ char *p = test_guest_path();
        assert_int_equal(kernel_probe_file(p, &f), 0);
        assert_int_equal(f, KERNEL_FORMAT_PVH_ELF);
        assert_true(kernel_probe_file("/proc/self/exe", &f) < 0);
        assert_true(kernel_probe_file("/nonexistent", &f) < 0);
}

static int setup(void **state) {
        _cleanup_free_ char *p = test_guest_path();
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
        struct stat st;
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        guest_elf_size = (size_t)st.st_size;
        guest_elf = malloc(guest_elf_size);
        assert_int_equal(read(fd, guest_elf, guest_elf_size), (ssize_t)guest_elf_size);
        return 0;
}

static int teardown(void **state) {
        free(guest_elf);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_guest_elf),   cmocka_unit_test(test_truncations),
                cmocka_unit_test(test_not_elf),     cmocka_unit_test(test_elf_without_note),
                cmocka_unit_test(test_bzimage),     cmocka_unit_test(test_probe_file),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
