/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <poll.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include "state-stream.h"
#include "time-util.h"
#include "wire.h"

int mig_header_validate(const MigHeader *h, uint64_t ram_size) {
        switch (h->type) {
        case MIG_PAGES:
                if (h->b == 0 || h->b > MIG_MAX_PAGES_PER_MSG || h->len != h->b * MIG_PAGE_SIZE)
                        return -EBADMSG;
                _fallthrough_;
        case MIG_ZERO:
                if (h->type == MIG_ZERO && (h->len != 0 || h->b == 0 || h->b > ram_size / MIG_PAGE_SIZE))
                        return -EBADMSG;
                if (h->a % MIG_PAGE_SIZE != 0 || h->a > ram_size ||
                    h->b > (ram_size - h->a) / MIG_PAGE_SIZE)
                        return -EBADMSG;
                return 0;
        case MIG_HELLO:
                return h->len >= 8 && h->len <= 8 + MIG_MAX_CONFIG_LEN ? 0 : -EBADMSG;
        case MIG_STATE:
        case MIG_STATE_TRIAL:
                return h->len > 0 && h->len <= STATE_MAX_SIZE ? 0 : -EBADMSG;
        case MIG_ERROR:
                return h->len <= MIG_MAX_ERROR_LEN ? 0 : -EBADMSG;
        case MIG_RAM_MAP: {
                uint64_t chunk = UINT64_C(1) << MIG_MAP_CHUNK_SHIFT;
                uint64_t chunks = ram_size / chunk + (ram_size % chunk != 0);
                return h->a == MIG_MAP_CHUNK_SHIFT && h->b == chunks && h->len == (chunks + 7) / 8 ? 0 : -EBADMSG;
        }
        case MIG_HELLO_ACK:
        case MIG_ITER_END:
        case MIG_FLUSH:
        case MIG_COMPLETE:
        case MIG_READY:
        case MIG_COMMIT:
        case MIG_ACK:
        case MIG_TRIAL_DONE:
                return h->len == 0 ? 0 : -EBADMSG;
        default:
                return -EBADMSG;
        }
}

int mig_send_all(int fd, const void *buf, size_t len) {
        const uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EPIPE ? -ECONNRESET : negative_errno();
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int mig_recv_all(int fd, void *buf, size_t len) {
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = recv(fd, p, len, MSG_WAITALL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? -ETIMEDOUT : negative_errno();
                }
                if (n == 0)
                        return -ECONNRESET;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int mig_send_msg(int fd, uint32_t type, uint64_t a, uint64_t b, const void *payload, uint32_t len) {
        uint8_t hdr[MIG_HEADER_SIZE];
        int r;

        mig_header_encode(&(MigHeader){ .type = type, .len = len, .a = a, .b = b }, hdr);
        r = mig_send_all(fd, hdr, sizeof hdr);
        if (r < 0 || len == 0)
                return r;
        return mig_send_all(fd, payload, len);
}

int mig_recv_header(int fd, MigHeader *h) {
        uint8_t hdr[MIG_HEADER_SIZE];
        int r;

        r = mig_recv_all(fd, hdr, sizeof hdr);
        if (r < 0)
                return r;
        mig_header_decode(hdr, h);
        return 0;
}

int mig_recv_all_until(int fd, void *buf, size_t len, uint64_t deadline_us) {
        uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
                if (n > 0) {
                        p += n;
                        len -= (size_t)n;
                        continue;
                }
                if (n == 0)
                        return -ECONNRESET;
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                        return errno == EPIPE ? -ECONNRESET : negative_errno();
                uint64_t now = time_monotonic_usec();
                if (now >= deadline_us)
                        return -ETIMEDOUT;
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                uint64_t ms = DIV_ROUND_UP(deadline_us - now, USEC_PER_MSEC);
                if (poll(&pfd, 1, (int)MIN(ms, (uint64_t)INT32_MAX)) < 0 && errno != EINTR)
                        return negative_errno();
        }
        return 0;
}
