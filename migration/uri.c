/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "uri.h"

int migration_uri_parse(const char *s, MigrationUri *ret) {
        MigrationUri u = {};

        if (!s || strlen(s) >= sizeof u.text)
                return -EINVAL;
        snprintf(u.text, sizeof u.text, "%s", s);

        if (strncmp(s, "unix:", 5) == 0) {
                struct sockaddr_un *sun = (struct sockaddr_un *)&u.addr;
                const char *path = s + 5;
                if (path[0] == 0 || strlen(path) >= sizeof sun->sun_path)
                        return -EINVAL;
                sun->sun_family = AF_UNIX;
                strcpy(sun->sun_path, path);
                u.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
                u.is_unix = true;
                *ret = u;
                return 0;
        }
        if (strncmp(s, "tcp:", 4) != 0)
                return -EINVAL;

        char host[256];
        const char *p = s + 4, *port_str;
        if (*p == '[') {
                const char *end = strchr(p, ']');
                if (!end || end[1] != ':' || (size_t)(end - p - 1) >= sizeof host)
                        return -EINVAL;
                memcpy(host, p + 1, (size_t)(end - p - 1));
                host[end - p - 1] = 0;
                port_str = end + 2;
        } else {
                const char *colon = strrchr(p, ':');
                if (!colon || (size_t)(colon - p) >= sizeof host)
                        return -EINVAL;
                memcpy(host, p, (size_t)(colon - p));
                host[colon - p] = 0;
                port_str = colon + 1;
        }
        char *end;
        errno = 0;
        unsigned long port = strtoul(port_str, &end, 10);
        if (errno || *port_str == 0 || *end || port == 0 || port > 65535)
                return -EINVAL;
        if (host[0] == 0)
                return -EINVAL;

        snprintf(u.host, sizeof u.host, "%s", host);
        snprintf(u.port, sizeof u.port, "%lu", port);
        /* A numeric address needs no lookup; a name waits for migration_uri_resolve(). */
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV }, *ai = NULL;
        if (getaddrinfo(host, u.port, &hints, &ai) == 0 && ai) {
                memcpy(&u.addr, ai->ai_addr, ai->ai_addrlen);
                u.addr_len = ai->ai_addrlen;
                u.resolved = true;
                freeaddrinfo(ai);
        }
        *ret = u;
        return 0;
}

int migration_uri_resolve(MigrationUri *u) {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;

        if (u->is_unix || u->resolved)
                return 0;
        if (getaddrinfo(u->host, u->port, &hints, &ai) != 0 || !ai)
                return -EADDRNOTAVAIL;
        memcpy(&u->addr, ai->ai_addr, ai->ai_addrlen);
        u->addr_len = ai->ai_addrlen;
        u->resolved = true;
        freeaddrinfo(ai);
        return 0;
}

static void tune(int fd, bool is_unix) {
        int one = 1, buf = 4 * 1024 * 1024;

        if (!is_unix) {
                /* A dead peer or link is found within seconds, not minutes: keepalive
                 * probes on an idle connection, and a bound on data left unacknowledged
                 * (the source lowers it to what is left of its deadline in the switchover).
                 * Accepted sockets inherit these from the listening one. */
                int idle = MIGRATION_KEEPALIVE_IDLE_S, intvl = 1, cnt = MIGRATION_KEEPALIVE_PROBES;
                unsigned user_timeout = MIGRATION_TCP_USER_TIMEOUT_MS;
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
                (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
                (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
                (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
                (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
}

int migration_uri_connect(MigrationUri *u, int *ret_fd) {
        int fd, r;

        r = migration_uri_resolve(u);
        if (r < 0)
                return r;
        fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        tune(fd, u->is_unix);
        if (connect(fd, (const struct sockaddr *)&u->addr, u->addr_len) < 0) {
                r = negative_errno();
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

/* A path to listen on: free, or a stale socket of ours, which is removed. */
static int unix_path_free(const struct sockaddr_un *sun, socklen_t len) {
        struct stat st;
        int fd, r;

        if (lstat(sun->sun_path, &st) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid())
                return -EEXIST;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        r = connect(fd, (const struct sockaddr *)sun, len) < 0 ? -errno : 0;
        close(fd);
        if (r == 0)
                return -EADDRINUSE;
        if (r != -ECONNREFUSED)
                return r;
        return unlink(sun->sun_path) < 0 ? negative_errno() : 0;
}

int migration_uri_listen(MigrationUri *u, int *ret_fd) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&u->addr;
        int fd, one = 1, r;

        /* A listen address is local: its name resolves from /etc/hosts, if at all. */
        r = migration_uri_resolve(u);
        if (r < 0)
                return r;
        if (u->is_unix) {
                r = unix_path_free(sun, u->addr_len);
                if (r < 0)
                        return r;
        }
        fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (!u->is_unix)
                (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        tune(fd, u->is_unix);
        if (bind(fd, (const struct sockaddr *)&u->addr, u->addr_len) < 0) {
                r = negative_errno();
                close(fd);
                return r;
        }
        if (u->is_unix) {
                struct stat st;
                if (lstat(sun->sun_path, &st) == 0) {
                        u->bound = true;
                        u->sock_dev = st.st_dev;
                        u->sock_ino = st.st_ino;
                }
        }
        if (listen(fd, 32) < 0) {
                r = negative_errno();
                close(fd);
                migration_uri_unlink(u);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

void migration_uri_unlink(MigrationUri *u) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&u->addr;
        struct stat st;

        if (!u->is_unix || !u->bound)
                return;
        u->bound = false;
        if (lstat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == u->sock_dev &&
            st.st_ino == u->sock_ino)
                (void)unlink(sun->sun_path);
}

bool migration_uri_is_local(const MigrationUri *u) {
        if (u->is_unix)
                return true;
        if (u->addr.ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)&u->addr;
                return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        }
        if (u->addr.ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&u->addr;
                return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
        }
        return false;
}
