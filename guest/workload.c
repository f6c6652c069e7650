/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vmmd test guest: the ring-3 workloads.  These run natively on kvm_pvm, so
 * all the memory traffic lives here.  Nothing in this file may do port I/O
 * or anything privileged: results go to the shared counters (sh), which the
 * ring-0 timer handler prints.
 */
#include "guest.h"

#define WORD_STEP 0x9e3779b97f4a7c15ULL /* odd: words of a page all differ */

typedef void page_fn(uint64_t *page, uint64_t index);

static uint64_t last_tsc;
static uint64_t pass;

/* Read the TSC and keep the largest gap between two reads. */
static uint64_t tsc_now(void)
{
        uint64_t now = rdtsc();

        if (now - last_tsc > sh.maxgap_tsc)
                sh.maxgap_tsc = now - last_tsc;
        last_tsc = now;
        return now;
}

/* A bijective 64-bit mix (the SplitMix64 finaliser). */
static uint64_t mix64(uint64_t x)
{
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebULL;
        x ^= x >> 31;
        return x;
}

/* dirty: word i of page p in pass n is dirty_base(n, p) + i * WORD_STEP. */
static uint64_t dirty_base(uint64_t n, uint64_t p)
{
        return mix64(n << 40 ^ p ^ 0x5a5a000000000000ULL);
}

/* verify: word i of the page at addr (index p) is verify_base + i * WORD_STEP. */
static uint64_t verify_base(const uint64_t *page, uint64_t p)
{
        return mix64((uint64_t)page ^ p << 44 ^ 0xa5a5000000000000ULL);
}

static void report(const uint64_t *page, unsigned word, uint64_t got, uint64_t want)
{
        uint64_t n = sh.nreports;

        sh.corrupt++;
        if (n < MAX_REPORTS) {
                struct corrupt_report *r = &sh.reports[n];

                r->addr = (uint64_t)page + word * 8;
                r->pass = pass;
                r->word = word;
                r->got = got;
                r->want = want;
                sh.nreports = n + 1;
        }
}

/* Call fn on the first npages pages of free RAM, in order. */
static void walk(uint64_t npages, page_fn *fn)
{
        uint64_t index = 0;

        for (unsigned r = 0; r < cfg.nregions && index < npages; r++) {
                uint64_t *page = (uint64_t *)cfg.regions[r].start;

                for (uint64_t i = 0; i < cfg.regions[r].pages && index < npages; i++) {
                        fn(page, index++);
                        page += PAGE_WORDS;
                }
        }
}

/* Pacing for dirty rate=R: one page every tsc_hz / (R * 256) TSC ticks. */
static uint64_t pace_origin, pace_due_x256, pace_step_x256, pace_slack;

static void pace(void)
{
        uint64_t now = tsc_now();

        if (now - pace_origin > (pace_due_x256 >> 8) + pace_slack)
                pace_due_x256 = (now - pace_origin) << 8; /* fell behind: no burst */
        while (now - pace_origin < pace_due_x256 >> 8) {
                __asm__ volatile("pause");
                now = tsc_now();
        }
        pace_due_x256 += pace_step_x256;
}

static void dirty_page(uint64_t *page, uint64_t p)
{
        uint64_t want = pass ? dirty_base(pass - 1, p) : 0;
        uint64_t want_step = pass ? WORD_STEP : 0;
        uint64_t put = dirty_base(pass, p);
        unsigned bad = PAGE_WORDS;
        uint64_t got = 0, expected = 0;

        if (pace_step_x256)
                pace();
        else
                tsc_now();
        for (unsigned i = 0; i < PAGE_WORDS; i++) {
                uint64_t v = page[i];

                if (v != want && bad == PAGE_WORDS) {
                        bad = i;
                        got = v;
                        expected = want;
                }
                page[i] = put;
                want += want_step;
                put += WORD_STEP;
        }
        if (bad != PAGE_WORDS && (pass || cfg.zerocheck))
                report(page, bad, got, expected);
        sh.pages++;
}

static void verify_fill_page(uint64_t *page, uint64_t p)
{
        uint64_t v = verify_base(page, p);

        tsc_now();
        for (unsigned i = 0; i < PAGE_WORDS; i++, v += WORD_STEP)
                page[i] = v;
        sh.pages++;
}

static void verify_check_page(uint64_t *page, uint64_t p)
{
        uint64_t base = verify_base(page, p), v = base;

        tsc_now();
        for (unsigned i = 0; i < PAGE_WORDS; i++, v += WORD_STEP) {
                if (page[i] != v) {
                        report(page, i, page[i], v);
                        verify_fill_page(page, p); /* count each corruption once */
                        sh.pages--;
                        break;
                }
        }
        sh.pages++;
}

static void fill_page(uint64_t *page, uint64_t p)
{
        uint64_t x = mix64(cfg.seed ^ mix64(p)) | 1;

        tsc_now();
        for (unsigned i = 0; i < PAGE_WORDS; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                page[i] = x;
        }
        sh.pages++;
}

void user_main(void)
{
        last_tsc = rdtsc();
        switch (cfg.work) {
        case WORK_DIRTY:
                if (cfg.rate_mibps) {
                        pace_origin = last_tsc;
                        pace_step_x256 = cfg.tsc_khz * 1000 / cfg.rate_mibps;
                        pace_slack = cfg.tsc_khz * 100; /* 100 ms */
                }
                for (;; pass++) {
                        walk(cfg.ws_pages, dirty_page);
                        sh.passes = pass + 1;
                }
        case WORK_VERIFY:
                walk(cfg.ws_pages, verify_fill_page);
                for (pass = 1;; pass++) {
                        walk(cfg.ws_pages, verify_check_page);
                        sh.passes = pass;
                }
        case WORK_FILL:
                walk(cfg.ws_pages, fill_page);
                sh.passes = 1;
                sh.filled = 1;
                break;
        case WORK_IDLE:
                break;
        }
        /* The next timer tick moves the CPU to ring-0 idle for good. */
        for (;;)
                __asm__ volatile("pause");
}
