/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>

#include "acpi.h"
#include "boot.h"
#include "kernel-probe.h"

#define PVH_START_MAGIC 0x336ec578

struct hvm_start_info {
        uint32_t magic;
        uint32_t version;
        uint32_t flags;
        uint32_t nr_modules;
        uint64_t modlist_paddr;
        uint64_t cmdline_paddr;
        uint64_t rsdp_paddr;
        uint64_t memmap_paddr;
        uint32_t memmap_entries;
        uint32_t reserved;
};

struct hvm_memmap_table_entry {
        uint64_t addr;
        uint64_t size;
        uint32_t type;
        uint32_t reserved;
};

struct hvm_modlist_entry {
        uint64_t paddr;
        uint64_t size;
        uint64_t cmdline_paddr;
        uint64_t reserved;
};

unsigned e820_build(const GuestMemory *m, E820Entry e[static E820_MAX_ENTRIES]) {
        unsigned n = 0;
        uint64_t low = m->regions[0].size;

        e[n++] = (E820Entry){ 0, 0x9fc00, E820_RAM };
        e[n++] = (E820Entry){ 0x9fc00, 0xa0000 - 0x9fc00, E820_RESERVED };
        e[n++] = (E820Entry){ 0xf0000, 0x10000, E820_RESERVED };
        e[n++] = (E820Entry){ 0x100000, low - 0x100000, E820_RAM };
        if (m->n_regions > 1)
                e[n++] = (E820Entry){ m->regions[1].gpa, m->regions[1].size, E820_RAM };
        return n;
}

/* The initramfs goes to the top of low RAM below 'limit', page aligned, above 'floor'. */
static int load_initramfs(const GuestMemory *m, const char *path, uint64_t floor, uint64_t limit,
                          uint64_t *ret_addr, uint64_t *ret_size) {
        MappedFile f = {};
        uint64_t top, addr;
        int r;

        r = mapped_file_open(path, &f);
        if (r < 0)
                return r;
        top = MIN(m->regions[0].size, limit);
        if (f.size > top || ALIGN_DOWN(top - f.size, 4096) < floor) {
                mapped_file_close(&f);
                return -E2BIG;
        }
        addr = ALIGN_DOWN(top - f.size, 4096);
        r = guest_memory_write(m, addr, f.data, f.size);
        *ret_addr = addr;
        *ret_size = f.size;
        mapped_file_close(&f);
        return r;
}

static int write_cmdline(const GuestMemory *m, const char *cmdline, size_t max) {
        size_t n = strlen(cmdline) + 1;

        if (n > max)
                return -E2BIG;
        return guest_memory_write(m, BOOT_CMDLINE_ADDR, cmdline, n);
}

static int load_pvh(const GuestMemory *m, const VmConfig *c, uint64_t rsdp, BootSetup *ret) {
        MappedFile f = {};
        PvhElfInfo info;
        struct hvm_start_info si = { .magic = PVH_START_MAGIC, .version = 1, .rsdp_paddr = rsdp };
        struct hvm_memmap_table_entry mm[E820_MAX_ENTRIES];
        E820Entry e820[E820_MAX_ENTRIES];
        uint64_t kernel_end = 0;
        unsigned n;
        int r;

        r = mapped_file_open(c->kernel, &f);
        if (r < 0)
                return r;
        r = pvh_elf_parse(f.data, f.size, &info);
        if (r < 0)
                goto out;

        for (unsigned i = 0; i < info.n_segments; i++) {
                const PvhSegment *s = &info.segments[i];
                uint8_t *dst;

                if (s->paddr < BOOT_KERNEL_MIN_ADDR) {
                        r = -EBADMSG;
                        goto out;
                }
                dst = guest_memory_ptr(m, s->paddr, s->memsz);
                if (!dst) {
                        r = -E2BIG;
                        goto out;
                }
                memcpy(dst, f.data + s->file_offset, s->filesz);
                memset(dst + s->filesz, 0, s->memsz - s->filesz);
                kernel_end = MAX(kernel_end, s->paddr + s->memsz);
        }

        r = write_cmdline(m, c->cmdline, BOOT_CMDLINE_MAX);
        if (r < 0)
                goto out;
        si.cmdline_paddr = BOOT_CMDLINE_ADDR;

        n = e820_build(m, e820);
        for (unsigned i = 0; i < n; i++)
                mm[i] = (struct hvm_memmap_table_entry){ e820[i].addr, e820[i].size, e820[i].type, 0 };
        r = guest_memory_write(m, BOOT_MEMMAP_ADDR, mm, n * sizeof mm[0]);
        if (r < 0)
                goto out;
        si.memmap_paddr = BOOT_MEMMAP_ADDR;
        si.memmap_entries = n;

        if (c->initramfs) {
                struct hvm_modlist_entry mod = {};
                r = load_initramfs(m, c->initramfs, ALIGN_UP(kernel_end, 4096), UINT64_MAX,
                                   &mod.paddr, &mod.size);
                if (r < 0)
                        goto out;
                r = guest_memory_write(m, BOOT_MODLIST_ADDR, &mod, sizeof mod);
                if (r < 0)
                        goto out;
                si.nr_modules = 1;
                si.modlist_paddr = BOOT_MODLIST_ADDR;
        }

        r = guest_memory_write(m, BOOT_START_INFO_ADDR, &si, sizeof si);
        if (r < 0)
                goto out;

        *ret = (BootSetup){ .mode = BOOT_MODE_PVH, .rip = info.entry, .rbx = BOOT_START_INFO_ADDR };
out:
        mapped_file_close(&f);
        return r;
}

static void put32(uint8_t *p, uint32_t v) {
        memcpy(p, &v, 4);
}

static int write_identity_page_tables(const GuestMemory *m) {
        uint64_t pml4[512] = {}, pdpt[512] = {}, pd[512];
        int r;

        pml4[0] = BOOT_PDPT_ADDR | 0x3;
        for (unsigned i = 0; i < 4; i++) {
                pdpt[i] = (BOOT_PD_ADDR + i * 0x1000) | 0x3;
                for (unsigned j = 0; j < 512; j++)
                        pd[j] = ((uint64_t)i << 30 | (uint64_t)j << 21) | 0x83; /* P|RW|PS */
                r = guest_memory_write(m, BOOT_PD_ADDR + i * 0x1000, pd, sizeof pd);
                if (r < 0)
                        return r;
        }
        r = guest_memory_write(m, BOOT_PML4_ADDR, pml4, sizeof pml4);
        if (r < 0)
                return r;
        return guest_memory_write(m, BOOT_PDPT_ADDR, pdpt, sizeof pdpt);
}

static int load_linux(const GuestMemory *m, const VmConfig *c, uint64_t rsdp, BootSetup *ret) {
        MappedFile f = {};
        BzImageInfo bz;
        uint8_t zp[4096] = {};
        E820Entry e820[E820_MAX_ENTRIES];
        uint64_t load_addr, hdr_end;
        unsigned n;
        int r;

        r = mapped_file_open(c->kernel, &f);
        if (r < 0)
                return r;
        r = bzimage_parse(f.data, f.size, &bz);
        if (r < 0)
                goto out;

        /* Load at the preferred address when it fits, else at the lowest aligned address. */
        load_addr = bz.pref_address;
        if (load_addr < BOOT_KERNEL_MIN_ADDR || !guest_memory_ptr(m, load_addr, bz.init_size))
                load_addr = ALIGN_UP((uint64_t)BOOT_KERNEL_MIN_ADDR,
                                     (uint64_t)MAX(bz.kernel_alignment, 4096u));
        if (!guest_memory_ptr(m, load_addr, MAX((uint64_t)bz.init_size, bz.kernel_size))) {
                r = -E2BIG;
                goto out;
        }
        r = guest_memory_write(m, load_addr, f.data + bz.kernel_offset, bz.kernel_size);
        if (r < 0)
                goto out;

        /* The setup header runs from 0x1f1 to 0x202 + the byte at 0x201. */
        hdr_end = 0x202 + f.data[0x201];
        if (hdr_end > f.size || hdr_end > sizeof zp) {
                r = -EBADMSG;
                goto out;
        }
        memcpy(zp + 0x1f1, f.data + 0x1f1, hdr_end - 0x1f1);
        zp[0x210] = 0xff;  /* type_of_loader: undefined boot loader */
        zp[0x211] |= 0x01; /* LOADED_HIGH */

        r = write_cmdline(m, c->cmdline, bz.cmdline_size ? (size_t)bz.cmdline_size + 1 : 256);
        if (r < 0)
                goto out;
        put32(zp + 0x228, BOOT_CMDLINE_ADDR);
        memcpy(zp + 0x070, &rsdp, 8); /* boot_params.acpi_rsdp_addr */

        if (c->initramfs) {
                uint64_t addr, size;
                r = load_initramfs(m, c->initramfs, load_addr + bz.init_size,
                                   (uint64_t)bz.initrd_addr_max + 1, &addr, &size);
                if (r < 0)
                        goto out;
                put32(zp + 0x218, (uint32_t)addr);
                put32(zp + 0x21c, (uint32_t)size);
        }

        n = e820_build(m, e820);
        zp[0x1e8] = (uint8_t)n;
        for (unsigned i = 0; i < n; i++) {
                uint8_t *p = zp + 0x2d0 + i * 20;
                memcpy(p, &e820[i].addr, 8);
                memcpy(p + 8, &e820[i].size, 8);
                put32(p + 16, e820[i].type);
        }
        r = guest_memory_write(m, BOOT_ZERO_PAGE_ADDR, zp, sizeof zp);
        if (r < 0)
                goto out;
        r = write_identity_page_tables(m);
        if (r < 0)
                goto out;

        *ret = (BootSetup){ .mode = BOOT_MODE_LINUX64, .rip = load_addr + 0x200, .rsi = BOOT_ZERO_PAGE_ADDR };
out:
        mapped_file_close(&f);
        return r;
}

static int write_gdt(const GuestMemory *m) {
        const uint64_t gdt[] = {
                0,
                0,
                UINT64_C(0x00af9b000000ffff), /* 0x10: 64-bit code */
                UINT64_C(0x00cf93000000ffff), /* 0x18: data */
                UINT64_C(0x00cf9b000000ffff), /* 0x20: 32-bit code */
        };
        return guest_memory_write(m, BOOT_GDT_ADDR, gdt, sizeof gdt);
}

int boot_load(const GuestMemory *m, const VmConfig *c, BootSetup *ret) {
        uint64_t rsdp;
        int r;

        r = write_gdt(m);
        if (r < 0)
                return r;
        /* ACPI tables (acpi.c), found through start_info / boot_params and the BIOS scan. */
        r = acpi_write(m, c->vcpus, &rsdp);
        if (r < 0)
                return r;
        /* A config that came with a migration was taken without opening its files
         * (VM_CONFIG_PARSE_NO_FILES): its kernel is looked at only when the VM is booted. */
        KernelFormat f = c->kernel_format;
        if (f == KERNEL_FORMAT_UNKNOWN && kernel_probe_file(c->kernel, &f) < 0)
                return -ENOEXEC;
        switch (f) {
        case KERNEL_FORMAT_PVH_ELF:
                return load_pvh(m, c, rsdp, ret);
        case KERNEL_FORMAT_BZIMAGE:
                return load_linux(m, c, rsdp, ret);
        default:
                return -ENOEXEC;
        }
}

static struct kvm_segment flat_segment(uint16_t sel, uint8_t type, bool code64, bool db) {
        return (struct kvm_segment){
                .base = 0,
                .limit = 0xffffffff,
                .selector = sel,
                .type = type,
                .present = 1,
                .dpl = 0,
                .db = db,
                .s = 1,
                .l = code64,
                .g = 1,
        };
}

int boot_setup_vcpu(int vcpu_fd, const BootSetup *b) {
        struct kvm_sregs sregs;
        struct kvm_regs regs = { .rflags = 0x2, .rip = b->rip, .rbx = b->rbx, .rsi = b->rsi };

        if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
                return negative_errno();

        sregs.gdt.base = BOOT_GDT_ADDR;
        sregs.gdt.limit = 5 * 8 - 1;
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat_segment(0x18, 0x3, false, true);
        sregs.tr = (struct kvm_segment){ .limit = 0xffff, .type = 0xb, .present = 1 };
        sregs.ldt = (struct kvm_segment){ .type = 0x2, .present = 1, .limit = 0xffff };

        if (b->mode == BOOT_MODE_PVH) {
                sregs.cs = flat_segment(0x20, 0xb, false, true);
                sregs.cr0 = 0x11; /* PE | ET */
                sregs.cr3 = 0;
                sregs.cr4 = 0;
                sregs.efer = 0;
        } else {
                sregs.cs = flat_segment(0x10, 0xb, true, false);
                sregs.cr0 = 0x80050033; /* PG | AM | WP | NE | ET | MP | PE */
                sregs.cr3 = BOOT_PML4_ADDR;
                sregs.cr4 = 0x20; /* PAE */
                sregs.efer = 0x500; /* LME | LMA */
        }

        if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
                return negative_errno();
        if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
                return negative_errno();
        return 0;
}
