/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Dirty page logging for precopy: KVM's per-slot bitmaps with manual protection
 * (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2), re-armed with KVM_CLEAR_DIRTY_LOG in chunks so a
 * fetch never write-protects all of RAM at once. Without manual protect, KVM_GET_DIRTY_LOG
 * clears and re-protects on read. The VMM itself writes no guest RAM after boot (there are
 * no DMA-capable devices), so KVM's log is complete. */
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vm-internal.h"

#define PAGE_SHIFT 12
#define CLEAR_CHUNK_PAGES (32 * 1024) /* 128 MiB of guest RAM per KVM_CLEAR_DIRTY_LOG */
#define BITS_PER_WORD (8 * sizeof(unsigned long))

static int set_logging(Vm *vm, bool on) {
        return guest_memory_register(&vm->mem, vm->vm_fd, on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
}

int vm_dirty_log_start(Vm *vm) {
        int r;

        if (!vm->built)
                return -ESTALE;
        if (vm->dirty_logging)
                return -EBUSY;

        if (!vm->manual_protect_checked) {
                int caps = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
                if (caps > 0) {
                        struct kvm_enable_cap cap = {
                                .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                                .args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
                        };
                        vm->manual_protect = ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) == 0;
                }
                vm->manual_protect_checked = true;
        }

        for (unsigned i = 0; i < vm->mem.n_regions; i++) {
                uint64_t pages = vm->mem.regions[i].size >> PAGE_SHIFT;
                vm->slot_bitmap[i] = calloc(DIV_ROUND_UP(pages, BITS_PER_WORD), sizeof(unsigned long));
                if (!vm->slot_bitmap[i]) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        r = set_logging(vm, true);
        if (r < 0)
                goto fail;
        vm->dirty_logging = true;
        return 0;
fail:
        for (unsigned i = 0; i < GUEST_MAX_REGIONS; i++) {
                free(vm->slot_bitmap[i]);
                vm->slot_bitmap[i] = NULL;
        }
        return r;
}

static int clear_chunks(Vm *vm, unsigned slot, uint64_t pages) {
        unsigned long *bm = vm->slot_bitmap[slot];

        for (uint64_t first = 0; first < pages; first += CLEAR_CHUNK_PAGES) {
                uint64_t n = MIN((uint64_t)CLEAR_CHUNK_PAGES, pages - first);
                uint64_t w0 = first / BITS_PER_WORD, w1 = DIV_ROUND_UP(first + n, BITS_PER_WORD);
                bool any = false;

                for (uint64_t w = w0; w < w1 && !any; w++)
                        any = bm[w] != 0;
                if (!any)
                        continue;
                struct kvm_clear_dirty_log c = {
                        .slot = slot,
                        .num_pages = (uint32_t)n,
                        .first_page = first,
                        .dirty_bitmap = bm + w0,
                };
                if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
                        return negative_errno();
        }
        return 0;
}

int64_t vm_dirty_log_fetch(Vm *vm, unsigned long *bitmap, uint64_t *ret_new) {
        int64_t found = 0;
        uint64_t fresh = 0;
        int r;

        if (!vm->dirty_logging)
                return -ESTALE;

        for (unsigned i = 0; i < vm->mem.n_regions; i++) {
                const VmMemoryRegion *reg = &vm->mem.regions[i];
                uint64_t pages = reg->size >> PAGE_SHIFT;
                uint64_t words = DIV_ROUND_UP(pages, BITS_PER_WORD);
                uint64_t base_word = (reg->host_offset >> PAGE_SHIFT) / BITS_PER_WORD;
                unsigned long *bm = vm->slot_bitmap[i];
                struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = bm };

                if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
                        return negative_errno();
                for (uint64_t w = 0; w < words; w++) {
                        if (!bm[w])
                                continue;
                        found += __builtin_popcountl(bm[w]);
                        fresh += (uint64_t)__builtin_popcountl(bm[w] & ~bitmap[base_word + w]);
                        bitmap[base_word + w] |= bm[w];
                }
                if (vm->manual_protect) {
                        r = clear_chunks(vm, i, pages);
                        if (r < 0)
                                return r;
                }
        }
        if (ret_new)
                *ret_new = fresh;
        return found;
}

int vm_dirty_log_stop(Vm *vm) {
        int r;

        if (!vm->dirty_logging)
                return 0;
        r = vm->built ? set_logging(vm, false) : 0;
        for (unsigned i = 0; i < GUEST_MAX_REGIONS; i++) {
                free(vm->slot_bitmap[i]);
                vm->slot_bitmap[i] = NULL;
        }
        vm->dirty_logging = false;
        return r;
}
