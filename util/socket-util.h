/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

/* Blocking sends and receives on 'fd' fail with EAGAIN after 'seconds' (0: never). */
void socket_set_io_timeout(int fd, unsigned seconds);
/* The same in µs. */
void socket_set_io_timeout_usec(int fd, uint64_t usec);
