/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The ACPI tables (ACPI 6.x layouts, written field by field at their spec offsets). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "acpi.h"
#include "macro.h"
#include "pm.h"

#define HDR_LEN 36
#define RSDP_LEN 36
#define FADT_LEN 276
#define FACS_LEN 64
#define MADT_LAPIC_LEN 8
#define MADT_IOAPIC_LEN 12
#define MADT_ISO_LEN 10
#define MADT_LAPIC_NMI_LEN 6

/* FADT flags */
#define FADT_WBINVD (1u << 0)
#define FADT_PROC_C1 (1u << 2)
#define FADT_SLP_BUTTON (1u << 5) /* no sleep button; PWR_BUTTON (bit 4) clear: fixed power button */
#define FADT_RESET_REG_SUP (1u << 10)
/* IA-PC boot architecture flags (bit 1, an 8042, stays clear: there is none) */
#define BOOT_LEGACY_DEVICES (1u << 0)
#define BOOT_VGA_NOT_PRESENT (1u << 2)
#define BOOT_MSI_NOT_SUPPORTED (1u << 3)
#define BOOT_CMOS_RTC_NOT_PRESENT (1u << 5)

/* MADT interrupt flags: polarity bits 0-1 (1 high), trigger bits 2-3 (1 edge, 3 level). */
#define MPS_ACTIVE_HIGH 0x1
#define MPS_LEVEL 0xc

typedef struct Builder {
        uint8_t *buf;
        size_t size, len;
        uint64_t base;
        int error;
} Builder;

static void put(uint8_t *p, uint64_t v, unsigned n) {
        for (unsigned i = 0; i < n; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

/* Reserves n zeroed bytes aligned to 'align'; returns their offset or -1. */
static long reserve(Builder *b, size_t n, size_t align) {
        size_t off = ALIGN_UP(b->len, align);

        if (b->error || off > b->size || n > b->size - off) {
                b->error = -ENOBUFS;
                return -1;
        }
        memset(b->buf + b->len, 0, off + n - b->len);
        b->len = off + n;
        return (long)off;
}

static uint8_t checksum(const uint8_t *p, size_t n) {
        uint8_t s = 0;
        for (size_t i = 0; i < n; i++)
                s = (uint8_t)(s + p[i]);
        return (uint8_t)-s;
}

static void header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev) {
        memcpy(t, sig, 4);
        put(t + 4, len, 4);
        t[8] = rev;
        memcpy(t + 10, "VMMD  ", 6);
        memcpy(t + 16, "VMMDTBL ", 8);
        put(t + 24, 1, 4);      /* OEM revision */
        memcpy(t + 28, "VMMD", 4); /* creator id */
        put(t + 32, 1, 4);      /* creator revision */
}

static void finish(uint8_t *t, uint32_t len) {
        t[9] = 0;
        t[9] = checksum(t, len);
}

/* A Generic Address Structure for an I/O port block. */
static void gas_io(uint8_t *p, uint16_t port, uint8_t bits, uint8_t access) {
        p[0] = 1; /* system I/O */
        p[1] = bits;
        p[2] = 0;
        p[3] = access; /* 1 byte, 2 word, 3 dword */
        put(p + 4, port, 8);
}

static long build_dsdt(Builder *b) {
        /* Name (_S5, Package (4) { 0, 0, 0, 0 }): SLP_TYP 0 for PM1a and PM1b. */
        static const uint8_t aml[] = {
                0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
        };
        uint32_t len = HDR_LEN + sizeof aml;
        long off = reserve(b, len, 16);

        if (off < 0)
                return -1;
        header(b->buf + off, "DSDT", len, 2);
        memcpy(b->buf + off + HDR_LEN, aml, sizeof aml);
        finish(b->buf + off, len);
        return off;
}

static long build_facs(Builder *b) {
        long off = reserve(b, FACS_LEN, 64);

        if (off < 0)
                return -1;
        memcpy(b->buf + off, "FACS", 4);
        put(b->buf + off + 4, FACS_LEN, 4);
        b->buf[off + 32] = 2; /* version */
        return off;
}

static long build_fadt(Builder *b, uint64_t facs, uint64_t dsdt) {
        long off = reserve(b, FADT_LEN, 16);
        uint8_t *t;

        if (off < 0)
                return -1;
        t = b->buf + off;
        header(t, "FACP", FADT_LEN, 6);
        put(t + 36, facs, 4);
        put(t + 40, dsdt, 4);
        t[45] = 0;                   /* preferred PM profile: unspecified */
        put(t + 46, PM_SCI_IRQ, 2);  /* SCI_INT */
        put(t + 48, 0, 4);           /* SMI_CMD 0: always in ACPI mode */
        put(t + 56, PM_BASE, 4);     /* PM1a_EVT_BLK: status + enable */
        put(t + 64, PM_BASE + 4, 4); /* PM1a_CNT_BLK */
        t[88] = 4;                   /* PM1_EVT_LEN */
        t[89] = 2;                   /* PM1_CNT_LEN */
        put(t + 96, 101, 2);         /* P_LVL2_LAT > 100: no C2 */
        put(t + 98, 1001, 2);        /* P_LVL3_LAT > 1000: no C3 */
        put(t + 109, BOOT_LEGACY_DEVICES | BOOT_VGA_NOT_PRESENT | BOOT_MSI_NOT_SUPPORTED |
                             BOOT_CMOS_RTC_NOT_PRESENT, 2);
        put(t + 112, FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_RESET_REG_SUP, 4);
        gas_io(t + 116, PM_RESET_PORT, 8, 1); /* RESET_REG */
        t[128] = 0x06;                        /* RESET_VALUE: pm.c resets on bit 2 */
        t[131] = 0;                           /* FADT minor version */
        put(t + 132, facs, 8);                /* X_FIRMWARE_CTRL */
        put(t + 140, dsdt, 8);                /* X_DSDT */
        gas_io(t + 148, PM_BASE, 32, 2);      /* X_PM1a_EVT_BLK */
        gas_io(t + 172, PM_BASE + 4, 16, 2);  /* X_PM1a_CNT_BLK */
        memcpy(t + 268, "VMMD", 4);           /* hypervisor vendor identity */
        finish(t, FADT_LEN);
        return off;
}

static long build_madt(Builder *b, unsigned n_vcpus) {
        /* KVM's default routing: ISA IRQ n is IOAPIC pin n, PIT included (no IRQ0 -> 2
         * override as on boards that wire the PIT to pin 2). The SCI is level triggered,
         * active high, as pm.c drives it. */
        static const struct {
                uint8_t irq;
                uint32_t gsi;
                uint16_t flags;
        } iso[] = {
                { 0, 0, 0 },
                { PM_SCI_IRQ, PM_SCI_IRQ, MPS_ACTIVE_HIGH | MPS_LEVEL },
        };
        uint32_t len = HDR_LEN + 8 + n_vcpus * MADT_LAPIC_LEN + MADT_IOAPIC_LEN +
                       ELEMENTSOF(iso) * MADT_ISO_LEN + MADT_LAPIC_NMI_LEN;
        long off = reserve(b, len, 16);
        uint8_t *t, *p;

        if (off < 0)
                return -1;
        t = b->buf + off;
        header(t, "APIC", len, 5);
        put(t + 36, ACPI_LAPIC_ADDR, 4);
        put(t + 40, 1, 4); /* PCAT_COMPAT: the 8259 pair is there */
        p = t + 44;
        for (unsigned i = 0; i < n_vcpus; i++, p += MADT_LAPIC_LEN) {
                p[0] = 0;
                p[1] = MADT_LAPIC_LEN;
                p[2] = (uint8_t)i; /* ACPI processor UID */
                p[3] = (uint8_t)i; /* APIC id: the vCPU index, as CPUID leaf 1 says */
                put(p + 4, 1, 4);  /* enabled */
        }
        p[0] = 1;
        p[1] = MADT_IOAPIC_LEN;
        p[2] = 0; /* IOAPIC id: KVM's IOAPIC resets to 0 */
        put(p + 4, ACPI_IOAPIC_ADDR, 4);
        put(p + 8, 0, 4); /* GSI base */
        p += MADT_IOAPIC_LEN;
        for (size_t i = 0; i < ELEMENTSOF(iso); i++, p += MADT_ISO_LEN) {
                p[0] = 2;
                p[1] = MADT_ISO_LEN;
                p[2] = 0; /* ISA */
                p[3] = iso[i].irq;
                put(p + 4, iso[i].gsi, 4);
                put(p + 8, iso[i].flags, 2);
        }
        p[0] = 4; /* local APIC NMI: LINT1 of every processor */
        p[1] = MADT_LAPIC_NMI_LEN;
        p[2] = 0xff;
        put(p + 3, 0, 2);
        p[5] = 1;
        finish(t, len);
        return off;
}

static long build_xsdt(Builder *b, const uint64_t *tables, unsigned n) {
        uint32_t len = HDR_LEN + 8 * n;
        long off = reserve(b, len, 16);

        if (off < 0)
                return -1;
        header(b->buf + off, "XSDT", len, 1);
        for (unsigned i = 0; i < n; i++)
                put(b->buf + off + HDR_LEN + 8 * i, tables[i], 8);
        finish(b->buf + off, len);
        return off;
}

int acpi_build(unsigned n_vcpus, uint64_t base, uint8_t *buf, size_t size) {
        Builder b = { .buf = buf, .size = MIN(size, (size_t)ACPI_TABLES_MAX), .base = base };
        long rsdp, dsdt, facs, fadt, madt, xsdt;
        uint64_t tables[2];

        if (n_vcpus == 0 || n_vcpus > ACPI_MAX_VCPUS || base % 16 != 0 ||
            base + ACPI_TABLES_MAX > UINT32_MAX)
                return -EINVAL;
        rsdp = reserve(&b, RSDP_LEN, 16);
        dsdt = build_dsdt(&b);
        facs = build_facs(&b);
        fadt = build_fadt(&b, base + (uint64_t)facs, base + (uint64_t)dsdt);
        madt = build_madt(&b, n_vcpus);
        if (b.error)
                return b.error;
        tables[0] = base + (uint64_t)fadt;
        tables[1] = base + (uint64_t)madt;
        xsdt = build_xsdt(&b, tables, ELEMENTSOF(tables));
        if (b.error)
                return b.error;

        uint8_t *r = buf + rsdp;
        memcpy(r, "RSD PTR ", 8);
        memcpy(r + 9, "VMMD  ", 6);
        r[15] = 2;         /* revision: ACPI 2.0+, XSDT */
        put(r + 16, 0, 4); /* no RSDT */
        put(r + 20, RSDP_LEN, 4);
        put(r + 24, base + (uint64_t)xsdt, 8);
        r[8] = checksum(r, 20);
        r[32] = checksum(r, RSDP_LEN);
        return (int)b.len;
}

int acpi_write(const GuestMemory *m, unsigned n_vcpus, uint64_t *ret_rsdp) {
        _cleanup_free_ uint8_t *buf = malloc(ACPI_TABLES_MAX);
        int n;

        if (!buf)
                return -ENOMEM;
        n = acpi_build(n_vcpus, ACPI_TABLES_ADDR, buf, ACPI_TABLES_MAX);
        if (n < 0)
                return n;
        n = guest_memory_write(m, ACPI_TABLES_ADDR, buf, (uint64_t)n);
        if (n < 0)
                return n;
        *ret_rsdp = ACPI_TABLES_ADDR;
        return 0;
}
