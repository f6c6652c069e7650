/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Dirty page tracking for precopy. Three sources feed one per-VM bitmap of pages dirtied
 * and not yet fetched ('dirty_pending', one bit per 4 KiB page of the host mapping):
 *
 * - KVM's dirty ring (KVM_CAP_DIRTY_LOG_RING_ACQ_REL or KVM_CAP_DIRTY_LOG_RING) where KVM
 *   has it: each vCPU pushes every page it dirties into a ring of its own that we map
 *   from the vCPU fd; collecting an entry marks it for reset, and KVM_RESET_DIRTY_RINGS
 *   hands the entries back and write-protects those pages again. A vCPU whose ring is
 *   (softly) full exits with KVM_EXIT_DIRTY_RING_FULL and collects all rings itself, so
 *   a fast-dirtying guest never waits for the harvester. A ring can only be enabled
 *   before the first vCPU exists: the choice is made when the VM is built.
 * - Otherwise KVM's per-slot bitmaps: with manual protection
 *   (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) KVM_GET_DIRTY_LOG only reads, and the pages found
 *   are re-armed with KVM_CLEAR_DIRTY_LOG in 128 MiB chunks, so a fetch never
 *   write-protects all of RAM at once; without it, KVM_GET_DIRTY_LOG clears on read.
 * - Pages the VMM itself writes into guest RAM (vm_write_guest()), which KVM never sees.
 *
 * Everything here is guarded by vm->dirty_lock. VmOptions.dirty_ring off
 * makes a VM built afterwards use the bitmaps even where the ring exists. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "vm-internal.h"

#define PAGE_SHIFT 12
#define CLEAR_CHUNK_PAGES (32 * 1024) /* 128 MiB of guest RAM per KVM_CLEAR_DIRTY_LOG */
#define BITS_PER_WORD (8 * sizeof(unsigned long))
/* 16384 entries (256 KiB) per vCPU: a guest dirtying 170,000 pages/s (one write fault
 * every 6 us) fills it in about 100 ms, three harvester periods. */
#define DIRTY_RING_WANT_BYTES (16384 * sizeof(struct kvm_dirty_gfn))

static int set_logging(Vm *vm, bool on) {
        return guest_memory_register(&vm->mem, vm->vm_fd, on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
}

int vm_dirty_ring_setup(Vm *vm) {
        static const int caps[] = { KVM_CAP_DIRTY_LOG_RING_ACQ_REL, KVM_CAP_DIRTY_LOG_RING };

        assert(vm->n_vcpus == 0);
        vm->dirty_ring_entries = 0;
        if (!vm->options.dirty_ring)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(caps); i++) {
                int max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, caps[i]);
                size_t bytes = DIRTY_RING_WANT_BYTES;

                if (max <= 0)
                        continue;
                while (bytes > (size_t)max && bytes > 4096)
                        bytes /= 2;
                if (bytes > (size_t)max)
                        continue;
                struct kvm_enable_cap cap = { .cap = (uint32_t)caps[i], .args[0] = bytes };
                if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
                        log_debug("dirty ring (cap %d, %zu bytes) refused: %m", caps[i], bytes);
                        continue;
                }
                vm->dirty_ring_entries = (uint32_t)(bytes / sizeof(struct kvm_dirty_gfn));
                return 1;
        }
        return 0;
}

int vcpu_map_dirty_ring(Vcpu *v) {
        size_t bytes = (size_t)v->vm->dirty_ring_entries * sizeof(struct kvm_dirty_gfn);
        long page = sysconf(_SC_PAGESIZE);
        void *p;

        if (bytes == 0)
                return 0;
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, KVM_DIRTY_LOG_PAGE_OFFSET * page);
        if (p == MAP_FAILED)
                return negative_errno();
        v->ring = p;
        v->ring_fetch = 0;
        return 0;
}

void vcpu_unmap_dirty_ring(Vcpu *v) {
        if (v->ring)
                munmap(v->ring, (size_t)v->vm->dirty_ring_entries * sizeof(struct kvm_dirty_gfn));
        v->ring = NULL;
}

/* Sets the bits of host pages [first, last] (page numbers in the host mapping). */
static void mark_pending(Vm *vm, uint64_t first, uint64_t last) {
        for (uint64_t p = first; p <= last; p++)
                vm->dirty_pending[p / BITS_PER_WORD] |= 1UL << (p % BITS_PER_WORD);
}

/* Collects every vCPU's ring into dirty_pending (or drops the entries when logging is
 * off) and gives the entries back to KVM. Called with dirty_lock held. */
static int collect_rings_locked(Vm *vm) {
        uint32_t mask = vm->dirty_ring_entries - 1;
        uint64_t n = 0;

        for (unsigned i = 0; i < vm->n_vcpus; i++) {
                Vcpu *v = &vm->vcpus[i];

                if (!v->ring)
                        continue;
                for (;;) {
                        struct kvm_dirty_gfn *e = &v->ring[v->ring_fetch & mask];
                        uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);

                        if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
                                break;
                        unsigned slot = e->slot & 0xffff; /* the address space id is in the high half */
                        if (vm->dirty_pending && slot < vm->mem.n_regions &&
                            e->offset < vm->mem.regions[slot].size >> PAGE_SHIFT) {
                                uint64_t page = (vm->mem.regions[slot].host_offset >> PAGE_SHIFT) + e->offset;
                                mark_pending(vm, page, page);
                        }
                        __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
                        v->ring_fetch++;
                        n++;
                }
        }
        if (n > 0 && ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
                return negative_errno();
        return 0;
}

void vm_dirty_ring_full(Vm *vm) {
        int r;

        pthread_mutex_lock(&vm->dirty_lock);
        r = collect_rings_locked(vm);
        pthread_mutex_unlock(&vm->dirty_lock);
        if (r < 0)
                log_debug("KVM_RESET_DIRTY_RINGS failed: %s", strerror(-r));
}

static void free_bitmaps(Vm *vm) {
        for (unsigned i = 0; i < GUEST_MAX_REGIONS; i++) {
                free(vm->slot_bitmap[i]);
                vm->slot_bitmap[i] = NULL;
        }
        free(vm->dirty_pending);
        vm->dirty_pending = NULL;
}

int vm_dirty_log_start(Vm *vm) {
        uint64_t words;
        int r;

        if (!vm->built)
                return -ESTALE;
        if (vm->dirty_logging)
                return -EBUSY;

        if (!vm->dirty_ring_entries && !vm->manual_protect_checked) {
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

        pthread_mutex_lock(&vm->dirty_lock);
        words = DIV_ROUND_UP(vm->mem.size >> PAGE_SHIFT, BITS_PER_WORD);
        vm->dirty_pending = calloc(words, sizeof(unsigned long));
        r = vm->dirty_pending ? 0 : -ENOMEM;
        for (unsigned i = 0; r == 0 && !vm->dirty_ring_entries && i < vm->mem.n_regions; i++) {
                uint64_t pages = vm->mem.regions[i].size >> PAGE_SHIFT;
                vm->slot_bitmap[i] = calloc(DIV_ROUND_UP(pages, BITS_PER_WORD), sizeof(unsigned long));
                if (!vm->slot_bitmap[i])
                        r = -ENOMEM;
        }
        if (r == 0)
                r = set_logging(vm, true);
        if (r == 0)
                vm->dirty_logging = true;
        else
                free_bitmaps(vm);
        pthread_mutex_unlock(&vm->dirty_lock);
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

/* Reads KVM's bitmap of each slot into dirty_pending and re-arms the pages found. */
static int collect_bitmaps_locked(Vm *vm) {
        int r;

        for (unsigned i = 0; i < vm->mem.n_regions; i++) {
                const VmMemoryRegion *reg = &vm->mem.regions[i];
                uint64_t pages = reg->size >> PAGE_SHIFT;
                uint64_t words = DIV_ROUND_UP(pages, BITS_PER_WORD);
                uint64_t base_word = (reg->host_offset >> PAGE_SHIFT) / BITS_PER_WORD;
                unsigned long *bm = vm->slot_bitmap[i];
                struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = bm };

                /* Regions start on 1 GiB boundaries of the host mapping: whole words. */
                assert((reg->host_offset >> PAGE_SHIFT) % BITS_PER_WORD == 0);
                if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
                        return negative_errno();
                for (uint64_t w = 0; w < words; w++)
                        vm->dirty_pending[base_word + w] |= bm[w];
                if (vm->manual_protect) {
                        r = clear_chunks(vm, i, pages);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int64_t vm_dirty_log_fetch(Vm *vm, unsigned long *bitmap, uint64_t *ret_new) {
        int64_t found = 0;
        uint64_t fresh = 0, words;
        int r;

        pthread_mutex_lock(&vm->dirty_lock);
        if (!vm->dirty_logging) {
                r = -ESTALE;
                goto out;
        }
        r = vm->dirty_ring_entries ? collect_rings_locked(vm) : collect_bitmaps_locked(vm);
        if (r < 0)
                goto out;
        words = DIV_ROUND_UP(vm->mem.size >> PAGE_SHIFT, BITS_PER_WORD);
        for (uint64_t w = 0; w < words; w++) {
                unsigned long d = vm->dirty_pending[w];
                if (!d)
                        continue;
                found += __builtin_popcountl(d);
                fresh += (uint64_t)__builtin_popcountl(d & ~bitmap[w]);
                bitmap[w] |= d;
                vm->dirty_pending[w] = 0;
        }
        if (ret_new)
                *ret_new = fresh;
out:
        pthread_mutex_unlock(&vm->dirty_lock);
        return r < 0 ? r : found;
}

int vm_dirty_log_stop(Vm *vm) {
        int r;

        pthread_mutex_lock(&vm->dirty_lock);
        if (!vm->dirty_logging) {
                pthread_mutex_unlock(&vm->dirty_lock);
                return 0;
        }
        r = vm->built ? set_logging(vm, false) : 0;
        free_bitmaps(vm);
        /* Entries pushed before logging went off: give them back unread. */
        if (vm->built && vm->dirty_ring_entries)
                (void)collect_rings_locked(vm);
        vm->dirty_logging = false;
        pthread_mutex_unlock(&vm->dirty_lock);
        return r;
}

const char *vm_dirty_log_method(const Vm *vm) {
        if (vm->dirty_ring_entries)
                return "dirty-ring";
        return "bitmap";
}

int vm_write_guest(Vm *vm, uint64_t gpa, const void *data, uint64_t len) {
        uint8_t *p;

        if (!vm->built)
                return -ESTALE;
        p = guest_memory_ptr(&vm->mem, gpa, len);
        if (!p)
                return -EFAULT;
        pthread_mutex_lock(&vm->dirty_lock);
        memcpy(p, data, len);
        if (vm->dirty_logging && len > 0) {
                uint64_t off = (uint64_t)(p - vm->mem.base);
                mark_pending(vm, off >> PAGE_SHIFT, (off + len - 1) >> PAGE_SHIFT);
        }
        pthread_mutex_unlock(&vm->dirty_lock);
        return 0;
}
