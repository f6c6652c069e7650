/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static const char *log_ident = "vmmd";
static int use_journal = -1;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

void log_open(const char *ident) {
        const char *e;

        if (ident)
                log_ident = ident;
        e = getenv("VMMD_LOG_LEVEL");
        if (e) {
                if (strcmp(e, "debug") == 0)
                        max_level = LOG_DEBUG;
                else if (strcmp(e, "info") == 0)
                        max_level = LOG_INFO;
                else if (strcmp(e, "warning") == 0)
                        max_level = LOG_WARNING;
                else if (strcmp(e, "err") == 0 || strcmp(e, "error") == 0)
                        max_level = LOG_ERR;
        }
}

/* stderr goes to the journal when $JOURNAL_STREAM names the device:inode of fd 2. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int log_internal(int level, int error, const char *const *fields, const char *file, int line,
                 const char *func, const char *format, ...) {
        char buf[2048];
        va_list ap;
        int saved_errno = errno;

        error = abs(error);
        if (level > max_level)
                return -error;

        errno = error;
        va_start(ap, format);
        vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);

        if (use_journal < 0)
                use_journal = stderr_is_journal();

        if (use_journal) {
                struct iovec iov[16];
                char msg[2100], prio[32], errbuf[32], loc[512], fn[256];
                size_t n = 0;

                snprintf(msg, sizeof msg, "MESSAGE=%s", buf);
                snprintf(prio, sizeof prio, "PRIORITY=%d", level);
                snprintf(loc, sizeof loc, "CODE_FILE=%s:%d", file, line);
                snprintf(fn, sizeof fn, "CODE_FUNC=%s", func);
                iov[n++] = (struct iovec){ msg, strlen(msg) };
                iov[n++] = (struct iovec){ prio, strlen(prio) };
                iov[n++] = (struct iovec){ loc, strlen(loc) };
                iov[n++] = (struct iovec){ fn, strlen(fn) };
                if (error > 0) {
                        snprintf(errbuf, sizeof errbuf, "ERRNO=%d", error);
                        iov[n++] = (struct iovec){ errbuf, strlen(errbuf) };
                }
                for (size_t i = 0; fields && fields[i] && n < ELEMENTSOF(iov); i++)
                        iov[n++] = (struct iovec){ (void *)fields[i], strlen(fields[i]) };
                if (sd_journal_sendv(iov, (int)n) >= 0)
                        goto out;
        }

        if (fields && fields[0]) {
                char prefix[256] = "";
                size_t off = 0;
                for (size_t i = 0; fields[i]; i++) {
                        int w = snprintf(prefix + off, sizeof prefix - off, "%s%s", off ? " " : "",
                                         fields[i]);
                        if (w < 0 || (size_t)w >= sizeof prefix - off)
                                break;
                        off += (size_t)w;
                }
                fprintf(stderr, "%s: [%s] %s\n", log_ident, prefix, buf);
        } else
                fprintf(stderr, "%s: %s\n", log_ident, buf);
out:
        errno = saved_errno;
        return -error;
}
