/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
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
        /* tcp: with a host name, resolved when first used (never on the caller's thread
         * at parse time: that is the daemon's event loop) */
        bool resolved;
        char host[256];
        char port[8];
        /* unix: the socket file migration_uri_listen() made, removed by
         * migration_uri_unlink() only while it is still that file. */
        bool bound;
        dev_t sock_dev;
        ino_t sock_ino;
} MigrationUri;

/* -EINVAL for a malformed URI. Numeric addresses are taken at once; a host name is
 * resolved later, by migration_uri_resolve() (which connect and listen call), so parsing
 * never blocks on DNS. */
int migration_uri_parse(const char *s, MigrationUri *ret);
/* -EADDRNOTAVAIL for a host name that does not resolve. */
int migration_uri_resolve(MigrationUri *u);
int migration_uri_connect(MigrationUri *u, int *ret_fd);
/* unix: a path that exists is never removed, but for a stale socket of ours (a socket file
 * of our uid that nobody listens on): anything else is -EEXIST, a live socket -EADDRINUSE. */
int migration_uri_listen(MigrationUri *u, int *ret_fd);
/* unix: removes the socket file listen made, if the path still holds it. */
void migration_uri_unlink(MigrationUri *u);
/* Loopback TCP or a unix socket: where zero-copy sends do not pay (FACTS.md). */
bool migration_uri_is_local(const MigrationUri *u);
