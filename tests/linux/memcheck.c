/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* vmmd-memcheck: the user-space workload of the Linux test image (a static binary, run
 * by /init). Fills MIB MiB with a pattern (word i of the buffer holds
 * i * 0x9e3779b97f4a7c15 ^ SEED), then every HB_MS milliseconds re-verifies all of it
 * and prints a heartbeat with the monotonic and wall clocks:
 *
 *   vmmd-memcheck: start mib=<n> hb_ms=<n> nproc=<n>
 *   vmmd-memcheck: HB seq=<n> mono_ns=<n> real_ns=<n> passes=<n> corrupt=<n> cpus=<n>
 *   vmmd-memcheck: CORRUPT word=<n> got=<hex> want=<hex>   (first 8 wrong words)
 *   vmmd-memcheck: CLOCK monotonic went back by <n> ns      (never expected)
 *   vmmd-memcheck: POWERBUTTON                              (then busybox poweroff -f)
 *
 * "corrupt" counts wrong words (each rewritten once found). The ACPI power button is
 * seen through the fixed-event counter /sys/firmware/acpi/interrupts/ff_pwr_btn (the
 * button driver, button.ko, handles the event); at a press the program execs
 * "busybox poweroff -f", which powers off through ACPI S5.
 *
 *   vmmd-memcheck [MIB [HB_MS]]     (defaults 16 and 500) */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SEED UINT64_C(0x5eed0f7e57c0ffee)
#define STEP UINT64_C(0x9e3779b97f4a7c15)
#define PWRBTN_COUNTER "/sys/firmware/acpi/interrupts/ff_pwr_btn"

static uint64_t now_ns(clockid_t c) {
        struct timespec ts;
        clock_gettime(c, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The fixed power button event count, -1 when ACPI does not offer it. */
static long power_button_count(void) {
        FILE *f = fopen(PWRBTN_COUNTER, "re");
        long n = -1;

        if (!f)
                return -1;
        if (fscanf(f, "%ld", &n) != 1)
                n = -1;
        fclose(f);
        return n;
}

int main(int argc, char **argv) {
        unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 16;
        unsigned long hb_ms = argc > 2 ? strtoul(argv[2], NULL, 10) : 500;
        uint64_t *mem, words, corrupt = 0, passes = 0, last_mono = 0, next;
        long buttons;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if (mib == 0 || mib > 4096 || hb_ms == 0 || hb_ms > 60000) {
                fprintf(stderr, "usage: %s [MIB (1-4096) [HB_MS (1-60000)]]\n", argv[0]);
                return 2;
        }
        words = (uint64_t)mib << 17;
        mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
                perror("vmmd-memcheck: mmap");
                return 1;
        }
        for (uint64_t i = 0; i < words; i++)
                mem[i] = i * STEP ^ SEED;
        buttons = power_button_count();
        printf("vmmd-memcheck: start mib=%lu hb_ms=%lu nproc=%ld\n", mib, hb_ms,
               sysconf(_SC_NPROCESSORS_ONLN));

        next = now_ns(CLOCK_MONOTONIC);
        for (uint64_t seq = 1;; seq++) {
                uint64_t mono, real;
                long b;

                for (uint64_t i = 0; i < words; i++) {
                        uint64_t want = i * STEP ^ SEED;
                        if (mem[i] != want) {
                                if (corrupt < 8)
                                        printf("vmmd-memcheck: CORRUPT word=%" PRIu64 " got=0x%" PRIx64
                                               " want=0x%" PRIx64 "\n",
                                               i, mem[i], want);
                                corrupt++;
                                mem[i] = want;
                        }
                }
                passes++;

                mono = now_ns(CLOCK_MONOTONIC);
                real = now_ns(CLOCK_REALTIME);
                if (mono < last_mono)
                        printf("vmmd-memcheck: CLOCK monotonic went back by %" PRIu64 " ns\n",
                               last_mono - mono);
                last_mono = mono;
                printf("vmmd-memcheck: HB seq=%" PRIu64 " mono_ns=%" PRIu64 " real_ns=%" PRIu64
                       " passes=%" PRIu64 " corrupt=%" PRIu64 " cpus=%ld\n",
                       seq, mono, real, passes, corrupt, sysconf(_SC_NPROCESSORS_ONLN));

                b = power_button_count();
                if (b > buttons && buttons >= 0) {
                        printf("vmmd-memcheck: POWERBUTTON\n");
                        sync();
                        execl("/bin/busybox", "poweroff", "-f", (char *)NULL);
                        perror("vmmd-memcheck: exec poweroff");
                        return 1;
                }
                if (buttons < 0)
                        buttons = b;

                /* Paced by the monotonic clock; a heartbeat that is late is not made up. */
                next += hb_ms * 1000000u;
                if (next < mono)
                        next = mono;
                struct timespec ts = { .tv_sec = (time_t)(next / 1000000000u),
                                       .tv_nsec = (long)(next % 1000000000u) };
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                        ;
        }
}
