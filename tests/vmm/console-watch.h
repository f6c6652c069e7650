/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Reading the test guest's console file: wait for a line to appear (inotify, no sleeps) and
 * parse its heartbeat lines ("HB seq=N ms=N work=W passes=N pages=N corrupt=N maxgap_us=N"). */

#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

typedef struct Heartbeat {
        uint64_t seq, ms, passes, pages, corrupt, maxgap_us;
} Heartbeat;

static inline uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t n = 0, cap = 0;
        if (!f)
                return strdup("");
        for (;;) {
                if (cap - n < 4096) {
                        cap = cap ? cap * 2 : 65536;
                        buf = realloc(buf, cap + 1);
                }
                size_t k = fread(buf + n, 1, cap - n, f);
                if (k == 0)
                        break;
                n += k;
        }
        fclose(f);
        if (!buf)
                buf = malloc(1);
        buf[n] = 0;
        return buf;
}

static inline bool parse_heartbeat(const char *line, Heartbeat *hb) {
        char work[32];
        return sscanf(line,
                      "HB seq=%" SCNu64 " ms=%" SCNu64 " work=%31s passes=%" SCNu64 " pages=%" SCNu64
                      " corrupt=%" SCNu64 " maxgap_us=%" SCNu64,
                      &hb->seq, &hb->ms, work, &hb->passes, &hb->pages, &hb->corrupt,
                      &hb->maxgap_us) == 7;
}

/* The heartbeats in a console text, in order; returns the count. */
static inline size_t heartbeats(const char *text, Heartbeat *out, size_t max) {
        size_t n = 0;
        for (const char *p = text; p && *p && n < max;) {
                const char *nl = strchr(p, '\n');
                if (!nl)
                        break; /* an incomplete last line */
                if (strncmp(p, "HB ", 3) == 0 && parse_heartbeat(p, &out[n]))
                        n++;
                p = nl + 1;
        }
        return n;
}

/* The guest's console across a move (save/restore, migration): the source's text then the
 * destination's, so a line the guest was printing at the switch is whole again. Checks that
 * the heartbeats are consecutive throughout, and returns how many there were on each side
 * (counting a joined line as the source's). */
static inline bool heartbeats_consecutive(const char *src_path, const char *dst_path, size_t *ret_src,
                                          size_t *ret_dst, Heartbeat *ret_last) {
        char *a = read_file(src_path), *b = read_file(dst_path);
        size_t la = strlen(a), lb = strlen(b), max = 100000, n_src, n_all;
        char *both = malloc(la + lb + 1);
        Heartbeat *hb = malloc(max * sizeof *hb);
        bool ok = true;

        memcpy(both, a, la);
        memcpy(both + la, b, lb + 1);
        /* Complete lines of the source alone, then of both. */
        n_src = heartbeats(a, hb, max);
        n_all = heartbeats(both, hb, max);
        for (size_t i = 1; i < n_all; i++)
                if (hb[i].seq != hb[i - 1].seq + 1) {
                        fprintf(stderr, "heartbeat gap: seq %" PRIu64 " then %" PRIu64 "\n", hb[i - 1].seq,
                                hb[i].seq);
                        ok = false;
                }
        if (n_all > 0 && ret_last)
                *ret_last = hb[n_all - 1];
        *ret_src = n_src;
        *ret_dst = n_all - n_src;
        free(hb);
        free(both);
        free(a);
        free(b);
        return ok && n_all > 0;
}

static inline bool last_heartbeat(const char *path, Heartbeat *ret) {
        char *t = read_file(path);
        size_t max = 100000;
        Heartbeat *hb = malloc(max * sizeof *hb);
        size_t n = heartbeats(t, hb, max);
        if (n > 0)
                *ret = hb[n - 1];
        free(hb);
        free(t);
        return n > 0;
}

/* Waits until check(path, userdata) is true or the timeout passes, waking on inotify
 * events for the file (and at least every 200 ms, for a file that does not exist yet). */
static inline bool wait_until(const char *path, bool (*check)(const char *, void *), void *userdata,
                              unsigned timeout_ms) {
        uint64_t deadline = now_ms() + timeout_ms;
        int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        bool found = false;

        if (in >= 0)
                (void)inotify_add_watch(in, path, IN_MODIFY | IN_CLOSE_WRITE);
        for (;;) {
                found = check(path, userdata);
                if (found)
                        break;
                uint64_t now = now_ms();
                if (now >= deadline)
                        break;
                struct pollfd p = { .fd = in, .events = POLLIN };
                if (poll(&p, 1, (int)MIN(deadline - now, (uint64_t)200)) > 0) {
                        char buf[4096];
                        while (read(in, buf, sizeof buf) > 0)
                                ;
                }
        }
        if (in >= 0)
                close(in);
        return found;
}

static inline bool check_text(const char *path, void *userdata) {
        char *t = read_file(path);
        bool found = strstr(t, userdata) != NULL;
        free(t);
        return found;
}

/* Waits until 'path' contains 'needle'. */
static inline bool wait_for_text(const char *path, const char *needle, unsigned timeout_ms) {
        return wait_until(path, check_text, (void *)needle, timeout_ms);
}

typedef struct HeartbeatWait {
        uint64_t min_seq;
        Heartbeat last;
} HeartbeatWait;

static inline bool check_heartbeat(const char *path, void *userdata) {
        HeartbeatWait *w = userdata;
        return last_heartbeat(path, &w->last) && w->last.seq >= w->min_seq;
}

/* Waits for a complete heartbeat line with seq >= min_seq; returns the last one. */
static inline bool wait_for_heartbeat(const char *path, uint64_t min_seq, unsigned timeout_ms,
                                      Heartbeat *ret) {
        HeartbeatWait w = { .min_seq = min_seq };
        if (!wait_until(path, check_heartbeat, &w, timeout_ms))
                return false;
        *ret = w.last;
        return true;
}
