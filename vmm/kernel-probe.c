/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <elf.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "kernel-probe.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

static bool range_ok(uint64_t off, uint64_t len, uint64_t size) {
        return off <= size && len <= size - off;
}

static int find_pvh_note(const uint8_t *buf, size_t size, uint64_t off, uint64_t len,
                         uint32_t *ret_entry) {
        uint64_t end = off + len;

        while (end - off >= sizeof(Elf64_Nhdr)) {
                Elf64_Nhdr nh;
                uint64_t name_off, desc_off, next;

                memcpy(&nh, buf + off, sizeof nh);
                name_off = off + sizeof nh;
                desc_off = name_off + ALIGN_UP((uint64_t)nh.n_namesz, 4);
                next = desc_off + ALIGN_UP((uint64_t)nh.n_descsz, 4);
                if (desc_off > end || next > end || next <= off)
                        return -EBADMSG;
                if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
                    memcmp(buf + name_off, "Xen", 4) == 0) {
                        uint32_t e;
                        if (nh.n_descsz < 4)
                                return -EBADMSG;
                        memcpy(&e, buf + desc_off, 4);
                        *ret_entry = e;
                        return 0;
                }
                off = next;
        }
        (void)size;
        return -ENOENT;
}

int pvh_elf_parse(const uint8_t *buf, size_t size, PvhElfInfo *ret) {
        PvhElfInfo info = {};
        Elf64_Ehdr eh;
        bool have_entry = false;

        if (size < sizeof eh)
                return -ENOEXEC;
        memcpy(&eh, buf, sizeof eh);
        if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
            eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
                return -ENOEXEC;
        if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 256 ||
            !range_ok(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), size))
                return -EBADMSG;

        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;

                memcpy(&ph, buf + eh.e_phoff + (uint64_t)i * sizeof ph, sizeof ph);
                if (ph.p_type == PT_NOTE && !have_entry) {
                        int r;
                        if (!range_ok(ph.p_offset, ph.p_filesz, size))
                                return -EBADMSG;
                        r = find_pvh_note(buf, size, ph.p_offset, ph.p_filesz, &info.entry);
                        if (r == 0)
                                have_entry = true;
                        else if (r != -ENOENT)
                                return r;
                } else if (ph.p_type == PT_LOAD && ph.p_memsz > 0) {
                        if (info.n_segments >= PVH_MAX_SEGMENTS)
                                return -EBADMSG;
                        if (!range_ok(ph.p_offset, ph.p_filesz, size) || ph.p_filesz > ph.p_memsz ||
                            ph.p_paddr + ph.p_memsz < ph.p_paddr)
                                return -EBADMSG;
                        info.segments[info.n_segments++] = (PvhSegment){
                                .paddr = ph.p_paddr,
                                .file_offset = ph.p_offset,
                                .filesz = ph.p_filesz,
                                .memsz = ph.p_memsz,
                        };
                }
        }
        if (!have_entry)
                return -ENOENT;
        if (info.n_segments == 0)
                return -EBADMSG;
        *ret = info;
        return 0;
}

static uint16_t rd16(const uint8_t *p) {
        return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t rd32(const uint8_t *p) {
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) {
        return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

int bzimage_parse(const uint8_t *buf, size_t size, BzImageInfo *ret) {
        BzImageInfo info = {};
        unsigned setup_sects;

        if (size < 0x270 || memcmp(buf + 0x202, "HdrS", 4) != 0 || rd16(buf + 0x1fe) != 0xaa55)
                return -ENOEXEC;
        info.version = rd16(buf + 0x206);
        if (info.version < 0x020c)
                return -EPROTONOSUPPORT;
        info.xloadflags = rd16(buf + 0x236);
        if (!(info.xloadflags & 0x1)) /* XLF_KERNEL_64 */
                return -EPROTONOSUPPORT;
        if (!(buf[0x211] & 0x1)) /* loadflags: LOADED_HIGH */
                return -EPROTONOSUPPORT;

        setup_sects = buf[0x1f1];
        if (setup_sects == 0)
                setup_sects = 4;
        info.setup_size = (setup_sects + 1) * 512;
        if (info.setup_size >= size)
                return -EBADMSG;
        info.kernel_offset = info.setup_size;
        info.kernel_size = size - info.setup_size;
        info.initrd_addr_max = rd32(buf + 0x22c);
        info.kernel_alignment = rd32(buf + 0x230);
        info.cmdline_size = rd32(buf + 0x238);
        info.payload_offset = rd32(buf + 0x248);
        info.payload_length = rd32(buf + 0x24c);
        info.pref_address = rd64(buf + 0x258);
        info.init_size = rd32(buf + 0x260);
        if (!range_ok(info.payload_offset, info.payload_length, info.kernel_size))
                return -EBADMSG;
        if (info.init_size < info.kernel_size)
                info.init_size = (uint32_t)MIN(info.kernel_size, UINT32_MAX);
        *ret = info;
        return 0;
}

int mapped_file_open(const char *path, MappedFile *ret) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        void *p;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) || st.st_size <= 0)
                return -EINVAL;
        p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
                return negative_errno();
        *ret = (MappedFile){ p, (size_t)st.st_size };
        return 0;
}

void mapped_file_close(MappedFile *f) {
        if (f->data)
                munmap(f->data, f->size);
        *f = (MappedFile){};
}

int kernel_probe_file(const char *path, KernelFormat *ret) {
        MappedFile f = {};
        PvhElfInfo pvh;
        BzImageInfo bz;
        int r;

        r = mapped_file_open(path, &f);
        if (r < 0)
                return r;
        if (pvh_elf_parse(f.data, f.size, &pvh) == 0) {
                *ret = KERNEL_FORMAT_PVH_ELF;
                r = 0;
        } else if (bzimage_parse(f.data, f.size, &bz) == 0) {
                *ret = KERNEL_FORMAT_BZIMAGE;
                r = 0;
        } else
                r = -EINVAL;
        mapped_file_close(&f);
        return r;
}
