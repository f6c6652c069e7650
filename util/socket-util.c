/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <sys/socket.h>
#include <sys/time.h>

#include "macro.h"
#include "socket-util.h"

void socket_set_io_timeout_usec(int fd, uint64_t usec) {
        struct timeval tv = { .tv_sec = (time_t)(usec / USEC_PER_SEC),
                              .tv_usec = (suseconds_t)(usec % USEC_PER_SEC) };

        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void socket_set_io_timeout(int fd, unsigned seconds) {
        socket_set_io_timeout_usec(fd, (uint64_t)seconds * USEC_PER_SEC);
}
