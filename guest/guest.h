/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vmmd test guest: definitions shared by the ring-0 part (entry.S, kernel.c,
 * console.c) and the ring-3 workloads (workload.c).
 *
 * Ring 0 runs in KVM's instruction emulator on kvm_pvm hosts (~0.74 us per
 * instruction), so it only boots, handles the timer and prints.  Everything
 * heavy runs in ring 3.  All of RAM is mapped user-accessible, so both rings
 * see the same variables.
 */
#ifndef VMMD_GUEST_H
#define VMMD_GUEST_H

/* GDT selectors (entry.S lays the GDT out in this order). */
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define USER_DS   0x1b /* 0x18 | RPL 3 */
#define USER_CS   0x23 /* 0x20 | RPL 3 */
#define TSS_SEL   0x28

#define PAGE_SIZE 4096ULL
#define PAGE_WORDS 512

#ifndef __ASSEMBLER__
#include <stdint.h>

enum work { WORK_IDLE, WORK_DIRTY, WORK_VERIFY, WORK_FILL };

#define MAX_REGIONS 32

/* A run of free RAM the workloads may use: page aligned. */
struct region {
        uint64_t start;
        uint64_t pages;
};

/* Set by ring 0 before it enters ring 3; read-only afterwards. */
struct guest_config {
        enum work work;
        uint64_t ws_pages;   /* working set: first ws_pages pages of regions[] */
        uint64_t rate_mibps; /* dirty: 0 = as fast as possible */
        uint64_t seed;       /* fill */
        int zerocheck;       /* dirty: pass 0 expects zero-filled pages */
        uint64_t tsc_khz;
        unsigned nregions;
        struct region regions[MAX_REGIONS];
};

#define MAX_REPORTS 8

struct corrupt_report {
        uint64_t addr;
        uint64_t pass;
        uint64_t word;
        uint64_t got;
        uint64_t want;
};

/* Counters written by ring 3 (and by the idle tick), read by the timer handler. */
struct guest_shared {
        volatile uint64_t passes;     /* complete passes over the working set */
        volatile uint64_t pages;      /* pages checked or written, in total */
        volatile uint64_t corrupt;    /* pages found not holding what they should */
        volatile uint64_t maxgap_tsc; /* largest gap between two TSC reads */
        volatile uint64_t filled;     /* fill: all free RAM written */
        volatile uint64_t nreports;   /* reports[] entries written */
        struct corrupt_report reports[MAX_REPORTS];
};

extern struct guest_config cfg;
extern struct guest_shared sh;

static inline uint64_t rdtsc(void)
{
        uint32_t lo, hi;

        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        return ((uint64_t)hi << 32) | lo;
}

/* Ring 3 (workload.c). */
__attribute__((noreturn)) void user_main(void);

/* Ring 0 only from here on: port I/O faults in ring 3. */
static inline void outb(uint16_t port, uint8_t v)
{
        __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
        __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint16_t inw(uint16_t port)
{
        uint16_t v;

        __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

static inline uint8_t inb(uint16_t port)
{
        uint8_t v;

        __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

/* console.c */
void con_putc(char c);
void con_puts(const char *s);
void con_dec(uint64_t v);
void con_hex(uint64_t v);

/* entry.S */
extern uint64_t pdpt[512];
extern uint64_t gdt[7];
extern char isr_stubs[], irq0_stub[], irq9_stub[], irq_spurious[];
extern char kstack_top[], ustack_top[], _end[];
__attribute__((noreturn)) void enter_user(void (*rip)(void), void *rsp);
__attribute__((noreturn)) void idle_forever(void);

/* kernel.c, called from entry.S */
__attribute__((noreturn)) void kmain(uint32_t start_info);
int timer_tick(void);
void sci_irq(void);
__attribute__((noreturn)) void exception(uint64_t vec, uint64_t err, uint64_t rip);

#endif /* __ASSEMBLER__ */
#endif /* VMMD_GUEST_H */
