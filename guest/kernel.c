/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vmmd test guest: ring 0.  Reads the PVH start_info, maps RAM, sets up the
 * IDT, TSS, PIC and PIT, calibrates the TSC, parses the command line, then
 * either idles (sti; hlt) or drops to the ring-3 workload.  The timer handler
 * prints heartbeats and powers off.
 */
#include "guest.h"

#define START_INFO_MAGIC 0x336ec578
#define E820_RAM 1
#define MAX_MEMMAP 64
#define MAX_CMDLINE 1024
#define GIB (1ULL << 30)
#define MAX_PHYS (512 * GIB) /* one PDPT */
#define LOW_PDS 4            /* static page directories: the first 4 GiB */

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define PIC_EOI 0x20
#define PIT_CH0 0x40
#define PIT_MODE 0x43
#define PIT_DIVISOR 11932 /* 1193182 Hz / 100 */
#define TICK_MS 10
#define PIT_HZ 1193182
#define CALIBRATE_UNITS (PIT_HZ / 50) /* 20 ms */
#define ACPI_PM1A_STS 0x600
#define ACPI_PM1A_EN 0x602
#define ACPI_PM1A_CNT 0x604
#define ACPI_PWRBTN 0x0100
#define ACPI_SLP_EN 0x2000
#define RESET_PORT 0xcf9

struct hvm_start_info {
        uint32_t magic;
        uint32_t version;
        uint32_t flags;
        uint32_t nr_modules;
        uint64_t modlist_paddr;
        uint64_t cmdline_paddr;
        uint64_t rsdp_paddr;
        uint64_t memmap_paddr; /* version >= 1 */
        uint32_t memmap_entries;
        uint32_t reserved;
};

struct hvm_memmap_entry {
        uint64_t addr;
        uint64_t size;
        uint32_t type;
        uint32_t reserved;
};

struct tss {
        uint32_t reserved0;
        uint64_t rsp[3];
        uint64_t reserved1;
        uint64_t ist[7];
        uint64_t reserved2;
        uint16_t reserved3;
        uint16_t iomap_base;
} __attribute__((packed));

struct desc_ptr {
        uint16_t limit;
        uint64_t base;
} __attribute__((packed));

struct guest_config cfg;
struct guest_shared sh;

static const char *const work_names[] = { "idle", "dirty", "verify", "fill" };

static char cmdline[MAX_CMDLINE];
static struct hvm_memmap_entry memmap[MAX_MEMMAP];
static unsigned nmemmap;
static uint64_t total_ram, max_ram_end, free_start;

static uint64_t pd_low[LOW_PDS - 1][512] __attribute__((aligned(4096)));
static unsigned mapped_gib = 1; /* entry.S maps the first GiB */
static uint64_t next_pd;        /* page directories above 4 GiB: after _end */

static struct tss tss;
static uint64_t idt[48 * 2] __attribute__((aligned(16)));

/* Timer state. */
static int running, idle_gaps, exit_reset;
static uint64_t run_ticks, last_tick_tsc, hb_seq, hb_ticks, hb_left, exit_ticks;
static uint64_t reports_printed;

__attribute__((noreturn)) static void halt_forever(void)
{
        for (;;)
                __asm__ volatile("cli; hlt");
}

__attribute__((noreturn)) static void fatal(const char *msg)
{
        con_puts("vmmd-test-guest: error: ");
        con_puts(msg);
        con_putc('\n');
        halt_forever();
}

void exception(uint64_t vec, uint64_t err, uint64_t rip)
{
        con_puts("PANIC vec=");
        con_dec(vec);
        con_puts(" err=");
        con_hex(err);
        con_puts(" rip=");
        con_hex(rip);
        con_putc('\n');
        halt_forever();
}

/* Identity-map [0, end) with 2 MiB user pages. */
static void map_below(uint64_t end)
{
        unsigned want = (unsigned)((end + GIB - 1) / GIB);

        while (mapped_gib < want) {
                unsigned g = mapped_gib++;
                uint64_t *pd, e = ((uint64_t)g << 30) | 0x87;

                if (g < LOW_PDS) {
                        pd = pd_low[g - 1];
                } else {
                        pd = (uint64_t *)next_pd;
                        next_pd += PAGE_SIZE;
                }
                for (int i = 0; i < 512; i++, e += 1 << 21)
                        pd[i] = e;
                pdpt[g] = (uint64_t)pd | 7;
        }
        __asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" : : : "rax", "memory");
}

/* Copy what we need out of start_info before anything can overwrite it. */
static void read_start_info(uint32_t addr)
{
        const struct hvm_start_info *si = (const void *)(uint64_t)addr;
        const struct hvm_memmap_entry *mm;
        const char *cl;

        map_below((uint64_t)addr + sizeof(*si));
        if (si->magic != START_INFO_MAGIC)
                fatal("bad start_info magic");
        if (si->version < 1 || si->memmap_entries == 0)
                fatal("start_info has no memory map (needs version >= 1 and memmap_entries > 0)");

        nmemmap = si->memmap_entries;
        if (nmemmap > MAX_MEMMAP)
                nmemmap = MAX_MEMMAP;
        if (si->memmap_paddr + nmemmap * sizeof(*mm) > 4 * GIB)
                fatal("memory map above 4 GiB");
        map_below(si->memmap_paddr + nmemmap * sizeof(*mm));
        mm = (const void *)si->memmap_paddr;
        for (unsigned i = 0; i < nmemmap; i++)
                memmap[i] = mm[i];

        if (si->cmdline_paddr) {
                if (si->cmdline_paddr + MAX_CMDLINE > 4 * GIB)
                        fatal("command line above 4 GiB");
                map_below(si->cmdline_paddr + MAX_CMDLINE);
                cl = (const char *)si->cmdline_paddr;
                for (unsigned i = 0; i < MAX_CMDLINE - 1 && cl[i]; i++)
                        cmdline[i] = cl[i];
        }
}

/* Map all RAM and list the free regions above the image and page tables. */
static void setup_memory(void)
{
        next_pd = ((uint64_t)_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
        for (unsigned i = 0; i < nmemmap; i++) {
                uint64_t end = memmap[i].addr + memmap[i].size;

                if (memmap[i].type != E820_RAM)
                        continue;
                total_ram += memmap[i].size;
                if (end > max_ram_end)
                        max_ram_end = end;
        }
        if (max_ram_end > MAX_PHYS)
                max_ram_end = MAX_PHYS;
        map_below(max_ram_end);
        free_start = next_pd;

        for (unsigned i = 0; i < nmemmap && cfg.nregions < MAX_REGIONS; i++) {
                uint64_t s = memmap[i].addr, e = memmap[i].addr + memmap[i].size;

                if (memmap[i].type != E820_RAM)
                        continue;
                if (s < free_start)
                        s = free_start;
                if (e > max_ram_end)
                        e = max_ram_end;
                s = (s + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
                e &= ~(PAGE_SIZE - 1);
                if (e <= s)
                        continue;
                cfg.regions[cfg.nregions].start = s;
                cfg.regions[cfg.nregions].pages = (e - s) / PAGE_SIZE;
                cfg.nregions++;
        }
}

static void set_gate(unsigned vec, const void *handler)
{
        uint64_t a = (uint64_t)handler;

        idt[2 * vec] = (a & 0xffff) | ((uint64_t)KERNEL_CS << 16) | (0x8eULL << 40) |
                       ((a >> 16) & 0xffff) << 48;
        idt[2 * vec + 1] = a >> 32;
}

static void setup_cpu(void)
{
        uint64_t base = (uint64_t)&tss, limit = sizeof(tss) - 1;
        struct desc_ptr idtr = { sizeof(idt) - 1, (uint64_t)idt };

        tss.rsp[0] = (uint64_t)kstack_top;
        tss.iomap_base = sizeof(tss); /* no I/O bitmap: ring 3 has no ports */
        gdt[5] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ULL << 40 | (base >> 24 & 0xff) << 56;
        gdt[6] = base >> 32;
        __asm__ volatile("ltr %w0" : : "r"(TSS_SEL));

        for (unsigned v = 0; v < 32; v++)
                set_gate(v, isr_stubs + 16 * v);
        set_gate(32, irq0_stub);
        for (unsigned v = 33; v < 48; v++)
                set_gate(v, irq_spurious);
        set_gate(0x29, irq9_stub);
        __asm__ volatile("lidt %0" : : "m"(idtr));

        /* 8259 pair: vectors 0x20-0x2f, cascade on IRQ2; unmasked: IRQ0 (PIT) and
         * IRQ9 (ACPI SCI, for the power button) through the cascade. */
        outb(PIC1_CMD, 0x11);
        outb(PIC2_CMD, 0x11);
        outb(PIC1_DATA, 0x20);
        outb(PIC2_DATA, 0x28);
        outb(PIC1_DATA, 4);
        outb(PIC2_DATA, 2);
        outb(PIC1_DATA, 1);
        outb(PIC2_DATA, 1);
        outb(PIC1_DATA, 0xfa);
        outb(PIC2_DATA, 0xfd);

        /* ACPI power button: PWRBTN_EN in PM1a_EN raises the SCI on a press. */
        outw(ACPI_PM1A_EN, ACPI_PWRBTN);

        /* PIT channel 0, lobyte/hibyte, mode 2 (rate generator), 100 Hz. */
        outb(PIT_MODE, 0x34);
        outb(PIT_CH0, PIT_DIVISOR & 0xff);
        outb(PIT_CH0, PIT_DIVISOR >> 8);
}

/* Latch and read PIT channel 0; *tsc is read just before the latch. */
static uint16_t pit_read(uint64_t *tsc, uint64_t *cost)
{
        uint64_t t = rdtsc();
        uint16_t lo, hi;

        outb(PIT_MODE, 0x00);
        lo = inb(PIT_CH0);
        hi = inb(PIT_CH0);
        *tsc = t;
        *cost = rdtsc() - t;
        return (uint16_t)(lo | hi << 8);
}

/*
 * TSC kHz, counted against the PIT's own counter (not against interrupt
 * arrival, which a busy host delays).  The end sample is retaken while it
 * looks preempted (its read took more than twice as long as the first), for
 * at most 4 times the planned 20 ms.
 */
__attribute__((noinline)) static uint64_t calibrate_tsc(void)
{
        uint64_t t0, t1, c0, cost, units = 0;
        uint16_t prev, c;

        pit_read(&t0, &c0); /* warm-up */
        prev = pit_read(&t0, &c0);
        for (;;) {
                c = pit_read(&t1, &cost);
                units += c <= prev ? prev - c : prev + PIT_DIVISOR - c;
                prev = c;
                if (units >= CALIBRATE_UNITS && (cost <= 2 * c0 || units >= 4 * CALIBRATE_UNITS))
                        break;
                if (!units && t1 - t0 > (1ULL << 32))
                        fatal("PIT channel 0 is not counting");
        }
        return (t1 - t0) * PIT_HZ / (units * 1000);
}

static int streq(const char *a, const char *b)
{
        while (*a && *a == *b)
                a++, b++;
        return *a == *b;
}

static int parse_u64(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (!*s)
                return -1;
        for (; *s; s++) {
                if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
                        return -1;
                v = v * 10 + (uint64_t)(*s - '0');
        }
        *ret = v;
        return 0;
}

struct options {
        uint64_t mib, rate, hb, exit, seed, zerocheck;
};

static void parse_option(char *key, struct options *o)
{
        char *val = key;
        uint64_t *num = 0;
        int ok = 0;

        while (*val && *val != '=')
                val++;
        if (*val)
                *val++ = 0;

        if (streq(key, "work")) {
                for (unsigned w = 0; w < 4; w++)
                        if (streq(val, work_names[w])) {
                                cfg.work = (enum work)w;
                                ok = 1;
                        }
        } else if (streq(key, "onexit")) {
                ok = streq(val, "poweroff") || streq(val, "reset");
                exit_reset = streq(val, "reset");
        } else if (streq(key, "mib")) {
                num = &o->mib;
        } else if (streq(key, "rate")) {
                num = &o->rate;
        } else if (streq(key, "hb")) {
                num = &o->hb;
        } else if (streq(key, "exit")) {
                num = &o->exit;
        } else if (streq(key, "seed")) {
                num = &o->seed;
        } else if (streq(key, "zerocheck")) {
                num = &o->zerocheck;
        } else {
                con_puts("WARN unknown option ");
                con_puts(key);
                con_putc('\n');
                return;
        }
        if (num)
                ok = parse_u64(val, num) == 0 && *num < (1ULL << 40) &&
                     (num != &o->zerocheck || *num <= 1);
        if (!ok) {
                con_puts("WARN bad value ");
                con_puts(key);
                con_putc('=');
                con_puts(val);
                con_putc('\n');
        }
}

static void parse_cmdline(struct options *o)
{
        static char buf[MAX_CMDLINE];
        char *p = buf;

        for (unsigned i = 0; (buf[i] = cmdline[i]) != 0; i++)
                ;
        while (*p) {
                char *tok;

                while (*p == ' ' || *p == '\t' || *p == '\n')
                        p++;
                if (!*p)
                        break;
                tok = p;
                while (*p && *p != ' ' && *p != '\t' && *p != '\n')
                        p++;
                if (*p)
                        *p++ = 0;
                parse_option(tok, o);
        }
}

static void print_kv(const char *key, uint64_t v)
{
        con_puts(key);
        con_dec(v);
}

static void heartbeat(void)
{
        print_kv("HB seq=", ++hb_seq);
        print_kv(" ms=", run_ticks * TICK_MS);
        con_puts(" work=");
        con_puts(work_names[cfg.work]);
        print_kv(" passes=", sh.passes);
        print_kv(" pages=", sh.pages);
        print_kv(" corrupt=", sh.corrupt);
        print_kv(" maxgap_us=", sh.maxgap_tsc * 1000 / cfg.tsc_khz);
        con_putc('\n');
}

static void print_report(const struct corrupt_report *r)
{
        con_puts("CORRUPT addr=");
        con_hex(r->addr);
        print_kv(" pass=", r->pass);
        print_kv(" word=", r->word);
        con_puts(" got=");
        con_hex(r->got);
        con_puts(" want=");
        con_hex(r->want);
        con_putc('\n');
}

__attribute__((noreturn)) static void do_exit(void)
{
        if (exit_reset) {
                con_puts("RESET\n");
                outb(RESET_PORT, 0x06);
        } else {
                con_puts("POWEROFF\n");
                outw(ACPI_PM1A_CNT, ACPI_SLP_EN);
        }
        halt_forever();
}

/* IRQ9 (SCI): a power button press is a request to shut down, which this guest
 * obeys at once.  Anything else is acknowledged and ignored. */
void sci_irq(void)
{
        uint16_t sts = inw(ACPI_PM1A_STS);

        outw(ACPI_PM1A_STS, sts); /* write one to clear */
        outb(PIC2_CMD, PIC_EOI);
        outb(PIC1_CMD, PIC_EOI);
        if (sts & ACPI_PWRBTN) {
                con_puts("POWERBUTTON\n");
                exit_reset = 0;
                do_exit();
        }
}

/* IRQ0, 100 Hz.  Kept short: on kvm_pvm every instruction here is emulated. */
int timer_tick(void)
{
        uint64_t now = rdtsc();

        outb(PIC1_CMD, PIC_EOI);
        if (!running)
                return 0;
        if (idle_gaps && now - last_tick_tsc > sh.maxgap_tsc)
                sh.maxgap_tsc = now - last_tick_tsc;
        last_tick_tsc = now;
        run_ticks++;

        if (reports_printed < sh.nreports)
                print_report(&sh.reports[reports_printed++]);
        if (hb_ticks && --hb_left == 0) {
                hb_left = hb_ticks;
                heartbeat();
        }
        if (run_ticks == exit_ticks)
                do_exit();
        if (cfg.work == WORK_FILL && sh.filled && !idle_gaps) {
                print_kv("FILLED pages=", sh.pages);
                con_putc('\n');
                idle_gaps = 1;
                return 1; /* entry.S switches to idle_forever */
        }
        return 0;
}

void kmain(uint32_t start_info)
{
        struct options o = { .mib = 16, .rate = 0, .hb = 100, .exit = 0, .seed = 0, .zerocheck = 1 };
        uint64_t free_pages = 0;

        read_start_info(start_info);
        setup_memory();
        setup_cpu();
        cfg.tsc_khz = calibrate_tsc();
        if (!cfg.tsc_khz)
                cfg.tsc_khz = 1;

        print_kv("vmmd-test-guest: boot mem_mib=", (total_ram + (1 << 19)) >> 20);
        print_kv(" tsc_khz=", cfg.tsc_khz);
        con_puts(" cmdline=");
        con_puts(cmdline);
        con_putc('\n');
        for (unsigned i = 0; i < nmemmap; i++) {
                con_puts("e820: ");
                con_hex(memmap[i].addr);
                con_putc(' ');
                con_hex(memmap[i].size);
                print_kv(" ", memmap[i].type);
                con_putc('\n');
        }

        parse_cmdline(&o);
        for (unsigned i = 0; i < cfg.nregions; i++)
                free_pages += cfg.regions[i].pages;
        cfg.ws_pages = o.mib * 256;
        if (o.mib == 0 || cfg.ws_pages > free_pages || cfg.work == WORK_FILL)
                cfg.ws_pages = free_pages;
        cfg.rate_mibps = o.rate;
        cfg.seed = o.seed;
        cfg.zerocheck = (int)o.zerocheck;
        hb_ticks = (o.hb + TICK_MS / 2) / TICK_MS;
        if (o.hb && !hb_ticks)
                hb_ticks = 1;
        hb_left = hb_ticks;
        exit_ticks = o.exit * (1000 / TICK_MS);

        print_kv("vmmd-test-guest: free_mib=", free_pages >> 8);
        print_kv(" ws_mib=", cfg.ws_pages >> 8);
        con_puts(" ws_start=");
        con_hex(cfg.nregions ? cfg.regions[0].start : 0);
        print_kv(" rate=", cfg.rate_mibps);
        print_kv(" hb=", hb_ticks * TICK_MS);
        print_kv(" exit=", o.exit);
        con_putc('\n');
        con_puts("READY work=");
        con_puts(work_names[cfg.work]);
        con_putc('\n');

        last_tick_tsc = rdtsc();
        idle_gaps = cfg.work == WORK_IDLE;
        running = 1;
        if (cfg.work == WORK_IDLE)
                idle_forever();
        enter_user(user_main, ustack_top);
}
