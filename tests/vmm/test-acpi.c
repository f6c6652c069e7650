/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ACPI tables, parsed back the way a guest's ACPI code walks them: RSDP -> XSDT ->
 * FADT (-> DSDT, FACS) and MADT, for 1, 2, 4 and the largest number of vCPUs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "acpi.h"
#include "pm.h"

#define BASE ACPI_TABLES_ADDR

static uint8_t buf[ACPI_TABLES_MAX];
static int used;

static uint64_t get(const uint8_t *p, unsigned n) {
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++)
                v |= (uint64_t)p[i] << (8 * i);
        return v;
}

static uint8_t sum(const uint8_t *p, size_t n) {
        uint8_t s = 0;
        for (size_t i = 0; i < n; i++)
                s = (uint8_t)(s + p[i]);
        return s;
}

/* The table at guest address 'gpa': inside what was built, its length sane, its
 * checksum zero. */
static const uint8_t *table(uint64_t gpa, const char *sig) {
        const uint8_t *t;
        uint32_t len;

        assert_true(gpa >= BASE && gpa + 36 <= BASE + (uint64_t)used);
        t = buf + (gpa - BASE);
        assert_memory_equal(t, sig, 4);
        len = (uint32_t)get(t + 4, 4);
        assert_true(len >= 36 && gpa + len <= BASE + (uint64_t)used);
        assert_int_equal(sum(t, len), 0);
        assert_memory_equal(t + 10, "VMMD  ", 6);
        return t;
}

static void check_fadt(const uint8_t *f) {
        uint64_t dsdt = get(f + 140, 8), facs = get(f + 132, 8);
        const uint8_t *d, *fs;

        assert_int_equal(get(f + 4, 4), 276);
        assert_int_equal(f[8], 6);
        assert_int_equal(get(f + 40, 4), dsdt);
        assert_int_equal(get(f + 36, 4), facs);
        assert_int_equal(get(f + 46, 2), PM_SCI_IRQ);
        assert_int_equal(get(f + 56, 4), PM_BASE);     /* PM1a_EVT_BLK */
        assert_int_equal(get(f + 64, 4), PM_BASE + 4); /* PM1a_CNT_BLK */
        assert_int_equal(f[88], 4);
        assert_int_equal(f[89], 2);
        assert_int_equal(get(f + 76, 4), 0); /* no PM timer */
        /* Not hardware-reduced; the power button is the fixed one; reset register set. */
        assert_int_equal(get(f + 112, 4) & (1u << 20), 0);
        assert_int_equal(get(f + 112, 4) & (1u << 4), 0);
        assert_int_not_equal(get(f + 112, 4) & (1u << 10), 0);
        assert_int_equal(f[116], 1);
        assert_int_equal(get(f + 120, 8), PM_RESET_PORT);
        assert_int_equal(f[128], 0x06);
        /* X_PM1a blocks: system I/O at the same ports. */
        assert_int_equal(f[148], 1);
        assert_int_equal(get(f + 152, 8), PM_BASE);
        assert_int_equal(f[172], 1);
        assert_int_equal(get(f + 176, 8), PM_BASE + 4);
        /* 8042 absent, CMOS RTC absent. */
        assert_int_equal(get(f + 109, 2) & 0x2, 0);
        assert_int_not_equal(get(f + 109, 2) & 0x20, 0);

        d = table(dsdt, "DSDT");
        /* \_S5 with SLP_TYP 0: Name, "_S5_", Package of 4 zeros. */
        static const uint8_t s5[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0, 0, 0, 0 };
        assert_int_equal(get(d + 4, 4), 36 + sizeof s5);
        assert_memory_equal(d + 36, s5, sizeof s5);

        assert_true(facs % 64 == 0 && facs >= BASE && facs + 64 <= BASE + (uint64_t)used);
        fs = buf + (facs - BASE);
        assert_memory_equal(fs, "FACS", 4);
        assert_int_equal(get(fs + 4, 4), 64);
}

static void check_madt(const uint8_t *m, unsigned n_vcpus) {
        uint32_t len = (uint32_t)get(m + 4, 4);
        unsigned n_lapic = 0, n_ioapic = 0, n_nmi = 0;
        bool sci_level = false, irq0_identity = false;

        assert_int_equal(get(m + 36, 4), ACPI_LAPIC_ADDR);
        assert_int_equal(get(m + 40, 4) & 1, 1);
        for (uint32_t off = 44; off < len;) {
                const uint8_t *e = m + off;
                assert_true(off + 2 <= len && e[1] >= 2 && off + e[1] <= len);
                switch (e[0]) {
                case 0:
                        assert_int_equal(e[1], 8);
                        assert_int_equal(e[2], n_lapic); /* UID */
                        assert_int_equal(e[3], n_lapic); /* APIC id, in vCPU order */
                        assert_int_equal(get(e + 4, 4), 1);
                        n_lapic++;
                        break;
                case 1:
                        assert_int_equal(e[1], 12);
                        assert_int_equal(get(e + 4, 4), ACPI_IOAPIC_ADDR);
                        assert_int_equal(get(e + 8, 4), 0);
                        n_ioapic++;
                        break;
                case 2:
                        assert_int_equal(e[1], 10);
                        assert_int_equal(e[2], 0);
                        if (e[3] == PM_SCI_IRQ && get(e + 4, 4) == PM_SCI_IRQ && get(e + 8, 2) == 0xd)
                                sci_level = true;
                        if (e[3] == 0 && get(e + 4, 4) == 0)
                                irq0_identity = true;
                        break;
                case 4:
                        assert_int_equal(e[1], 6);
                        assert_int_equal(e[2], 0xff);
                        assert_int_equal(e[5], 1);
                        n_nmi++;
                        break;
                default:
                        fail_msg("unexpected MADT entry type %u", e[0]);
                }
                off += e[1];
        }
        assert_int_equal(n_lapic, n_vcpus);
        assert_int_equal(n_ioapic, 1);
        assert_int_equal(n_nmi, 1);
        assert_true(sci_level);
        assert_true(irq0_identity);
}

static void check(unsigned n_vcpus) {
        const uint8_t *r = buf, *x;
        uint32_t xlen;
        bool fadt = false, madt = false;

        memset(buf, 0xa5, sizeof buf);
        used = acpi_build(n_vcpus, BASE, buf, sizeof buf);
        assert_true(used > 36);
        assert_memory_equal(r, "RSD PTR ", 8);
        assert_int_equal(sum(r, 20), 0);
        assert_int_equal(r[15], 2);
        assert_int_equal(get(r + 20, 4), 36);
        assert_int_equal(sum(r, 36), 0);

        x = table(get(r + 24, 8), "XSDT");
        xlen = (uint32_t)get(x + 4, 4);
        assert_int_equal((xlen - 36) % 8, 0);
        for (uint32_t off = 36; off < xlen; off += 8) {
                uint64_t gpa = get(x + off, 8);
                const uint8_t *t = buf + (gpa - BASE);
                assert_true(gpa >= BASE && gpa < BASE + (uint64_t)used);
                if (memcmp(t, "FACP", 4) == 0) {
                        check_fadt(table(gpa, "FACP"));
                        fadt = true;
                } else if (memcmp(t, "APIC", 4) == 0) {
                        check_madt(table(gpa, "APIC"), n_vcpus);
                        madt = true;
                } else
                        fail_msg("unexpected table %.4s", (const char *)t);
        }
        assert_true(fadt && madt);
}

static void test_1(void **state) {
        check(1);
}
static void test_2(void **state) {
        check(2);
}
static void test_4(void **state) {
        check(4);
}
static void test_max(void **state) {
        check(ACPI_MAX_VCPUS);
}

static void test_bad(void **state) {
        uint8_t small[64];

        assert_int_equal(acpi_build(0, BASE, buf, sizeof buf), -EINVAL);
        assert_int_equal(acpi_build(ACPI_MAX_VCPUS + 1, BASE, buf, sizeof buf), -EINVAL);
        assert_int_equal(acpi_build(1, BASE + 4, buf, sizeof buf), -EINVAL);
        assert_int_equal(acpi_build(1, BASE, small, sizeof small), -ENOBUFS);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_1),   cmocka_unit_test(test_2),   cmocka_unit_test(test_4),
                cmocka_unit_test(test_max), cmocka_unit_test(test_bad),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
