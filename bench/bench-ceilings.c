/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* bench-ceilings: what this host can do at most, for bench/run to show migration throughput
 * against: one-stream loopback TCP with send() and with io_uring, single-thread memcpy (warm
 * destination), and receiving a TCP stream into freshly mapped memory with a thread that
 * prefaults ahead of the receiver (what a migration destination does).
 *
 *   bench-ceilings [MIB]      (default 1024: bytes moved per figure)
 *
 * Prints one JSON object: {"tcp_send_mibps":..., "tcp_uring_mibps":..., "memcpy_mibps":...,
 * "recv_fresh_mibps":...}. Asserts nothing. */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)
#define INFLIGHT 8
#define MIN_CHUNK(x) ((x) < CHUNK ? (size_t)(x) : (size_t)CHUNK)

static size_t total;

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
        fprintf(stderr, "bench-ceilings: %s: %s\n", what, strerror(errno));
        exit(1);
}

/* A connected loopback TCP pair: *ret_tx sends, *ret_rx receives. */
static void tcp_pair(int *ret_tx, int *ret_rx) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), tx, rx, one = 1;

        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
            getsockname(l, (struct sockaddr *)&a, &len) < 0)
                die("listen");
        tx = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (tx < 0 || connect(tx, (struct sockaddr *)&a, sizeof a) < 0)
                die("connect");
        rx = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (rx < 0)
                die("accept");
        (void)setsockopt(tx, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        close(l);
        *ret_tx = tx;
        *ret_rx = rx;
}

typedef struct Receiver {
        int fd;
        uint8_t *dst;         /* NULL: into one reused buffer */
        _Atomic size_t done;  /* bytes received */
        _Atomic size_t faulted; /* prefault thread: bytes touched */
} Receiver;

static void *receiver(void *p) {
        Receiver *r = p;
        uint8_t *buf = r->dst ? NULL : malloc(CHUNK);
        size_t n = 0;

        while (n < total) {
                ssize_t k = recv(r->fd, r->dst ? r->dst + n : buf, MIN_CHUNK(total - n), MSG_WAITALL);
                if (k <= 0)
                        die("recv");
                n += (size_t)k;
                atomic_store(&r->done, n);
        }
        free(buf);
        return NULL;
}

/* Touches the receiver's fresh memory ahead of it (at most 64 MiB ahead), as the
 * destination's prefault thread does. */
static void *prefaulter(void *p) {
        Receiver *r = p;
        size_t off = 0;

        while (off < total) {
                if (off > atomic_load(&r->done) + (64u << 20)) {
                        sched_yield();
                        continue;
                }
                for (size_t end = off + CHUNK; off < end && off < total; off += 4096)
                        ((volatile uint8_t *)r->dst)[off] = 0;
                atomic_store(&r->faulted, off);
        }
        return NULL;
}

static double tcp_send(bool fresh) {
        uint8_t *src = malloc(CHUNK);
        Receiver r = {};
        pthread_t rt, pt;
        int tx;
        double t0, t;

        memset(src, 0x5a, CHUNK);
        tcp_pair(&tx, &r.fd);
        if (fresh) {
                r.dst = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (r.dst == MAP_FAILED)
                        die("mmap");
        }
        t0 = now_s();
        pthread_create(&rt, NULL, receiver, &r);
        if (fresh)
                pthread_create(&pt, NULL, prefaulter, &r);
        for (size_t n = 0; n < total;) {
                ssize_t k = send(tx, src, MIN_CHUNK(total - n), 0);
                if (k <= 0)
                        die("send");
                n += (size_t)k;
        }
        pthread_join(rt, NULL);
        if (fresh)
                pthread_join(pt, NULL);
        t = now_s() - t0;
        close(tx);
        close(r.fd);
        if (fresh)
                munmap(r.dst, total);
        free(src);
        return (double)total / t / (1 << 20);
}

static double tcp_uring(void) {
        struct io_uring ring;
        uint8_t *src = malloc(CHUNK);
        Receiver r = {};
        pthread_t rt;
        size_t queued = 0, sent = 0;
        unsigned inflight = 0;
        int tx;
        double t0, t;

        memset(src, 0xa5, CHUNK);
        tcp_pair(&tx, &r.fd);
        if (io_uring_queue_init(2 * INFLIGHT, &ring, 0) < 0)
                die("io_uring_queue_init");
        t0 = now_s();
        pthread_create(&rt, NULL, receiver, &r);
        while (sent < total) {
                while (inflight < INFLIGHT && queued < total) {
                        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                        size_t len = MIN_CHUNK(total - queued);
                        io_uring_prep_send(sqe, tx, src, len, MSG_WAITALL);
                        queued += len;
                        inflight++;
                }
                io_uring_submit(&ring);
                struct io_uring_cqe *cqe;
                if (io_uring_wait_cqe(&ring, &cqe) < 0 || cqe->res <= 0) {
                        errno = cqe ? -cqe->res : EIO;
                        die("io_uring send");
                }
                sent += (size_t)cqe->res;
                inflight--;
                io_uring_cqe_seen(&ring, cqe);
        }
        pthread_join(rt, NULL);
        t = now_s() - t0;
        io_uring_queue_exit(&ring);
        close(tx);
        close(r.fd);
        free(src);
        return (double)total / t / (1 << 20);
}

static double memcpy_warm(void) {
        size_t n = total < (256u << 20) ? total : (256u << 20);
        uint8_t *a = malloc(n), *b = malloc(n);
        double t0, t;
        unsigned reps = (unsigned)(total / n);

        memset(a, 1, n);
        memset(b, 2, n); /* warm: every destination page present */
        t0 = now_s();
        for (unsigned i = 0; i < reps; i++) {
                memcpy(b, a, n);
                __asm__ volatile("" : : "r"(b) : "memory");
        }
        t = now_s() - t0;
        free(a);
        free(b);
        return (double)n * reps / t / (1 << 20);
}

int main(int argc, char **argv) {
        total = (size_t)(argc > 1 ? strtoul(argv[1], NULL, 10) : 1024) << 20;
        if (total < CHUNK)
                total = CHUNK;
        double s = tcp_send(false), u = tcp_uring(), m = memcpy_warm(), f = tcp_send(true);
        printf("{\"bytes\": %zu, \"tcp_send_mibps\": %.0f, \"tcp_uring_mibps\": %.0f, "
               "\"memcpy_mibps\": %.0f, \"recv_fresh_mibps\": %.0f}\n",
               total, s, u, m, f);
        return 0;
}
