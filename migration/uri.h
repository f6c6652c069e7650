/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Migration URIs: "tcp:HOST:PORT" (HOST a name, an IPv4 address or [IPv6]) and
 * "unix:PATH". */

/* TCP sockets of a migration (docs/migration.md, "Dead peers and links"). */
#define MIGRATION_KEEPALIVE_IDLE_S 5
#define MIGRATION_KEEPALIVE_PROBES 5
#define MIGRATION_TCP_USER_TIMEOUT_MS 20000

typedef struct MigrationUri {
        bool is_unix;
        struct sockaddr_storage addr;
        socklen_t addr_len;
        char text[256];
} MigrationUri;

/* -EINVAL for a malformed URI, -EADDRNOTAVAIL for a host name that does not resolve. */
int migration_uri_parse(const char *s, MigrationUri *ret);
int migration_uri_connect(const MigrationUri *u, int *ret_fd);
int migration_uri_listen(const MigrationUri *u, int *ret_fd);
/* Loopback TCP or a unix socket: where zero-copy sends do not pay (FACTS.md). */
bool migration_uri_is_local(const MigrationUri *u);
