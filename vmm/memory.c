/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "memory.h"

int guest_memory_alloc(uint64_t size, bool thp, GuestMemory *ret) {
        GuestMemory m = {};
        void *p;

        if (size == 0 || !IS_ALIGNED(size, 2 * MiB))
                return -EINVAL;
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
        if (p == MAP_FAILED)
                return negative_errno();
        /* Transparent huge pages (best effort); off for comparing (VmOptions.thp). */
        if (thp)
                (void)madvise(p, size, MADV_HUGEPAGE);
        (void)madvise(p, size, MADV_DONTDUMP);

        m.base = p;
        m.size = size;
        m.regions[m.n_regions++] = (VmMemoryRegion){
                .gpa = 0,
                .size = MIN(size, GUEST_LOW_RAM_END),
                .host_offset = 0,
        };
        if (size > GUEST_LOW_RAM_END)
                m.regions[m.n_regions++] = (VmMemoryRegion){
                        .gpa = GUEST_HIGH_RAM_START,
                        .size = size - GUEST_LOW_RAM_END,
                        .host_offset = GUEST_LOW_RAM_END,
                };
        *ret = m;
        return 0;
}

void guest_memory_release(GuestMemory *m) {
        if (m->base)
                munmap(m->base, m->size);
        *m = (GuestMemory){};
}

int guest_memory_register(const GuestMemory *m, int vm_fd, uint32_t flags) {
        for (unsigned i = 0; i < m->n_regions; i++) {
                struct kvm_userspace_memory_region r = {
                        .slot = i,
                        .flags = flags,
                        .guest_phys_addr = m->regions[i].gpa,
                        .memory_size = m->regions[i].size,
                        .userspace_addr = (uint64_t)(uintptr_t)(m->base + m->regions[i].host_offset),
                };
                if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
                        return negative_errno();
        }
        return 0;
}

void *guest_memory_ptr(const GuestMemory *m, uint64_t gpa, uint64_t len) {
        for (unsigned i = 0; i < m->n_regions; i++) {
                const VmMemoryRegion *r = &m->regions[i];
                if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
                        return m->base + r->host_offset + (gpa - r->gpa);
        }
        return NULL;
}

int guest_memory_write(const GuestMemory *m, uint64_t gpa, const void *data, uint64_t len) {
        void *p = guest_memory_ptr(m, gpa, len);

        if (!p)
                return -EFAULT;
        memcpy(p, data, len);
        return 0;
}
