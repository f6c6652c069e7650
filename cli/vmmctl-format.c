/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "macro.h"
#include "vmmctl-format.h"

const char *ctl_format_mib(char *buf, size_t size, uint64_t bytes) {
        if (bytes >= 10 * GiB)
                snprintf(buf, size, "%.1f GiB", (double)bytes / (double)GiB);
        else
                snprintf(buf, size, "%.1f MiB", (double)bytes / (double)MiB);
        return buf;
}

const char *ctl_format_usec(char *buf, size_t size, uint64_t usec) {
        if (usec < 1000)
                snprintf(buf, size, "%" PRIu64 " us", usec);
        else if (usec < 10 * USEC_PER_SEC)
                snprintf(buf, size, "%.1f ms", (double)usec / 1000.0);
        else
                snprintf(buf, size, "%.2f s", (double)usec / (double)USEC_PER_SEC);
        return buf;
}

const char *ctl_format_rate(char *buf, size_t size, uint64_t bytes_per_sec) {
        snprintf(buf, size, "%.1f MiB/s", (double)bytes_per_sec / (double)MiB);
        return buf;
}

const char *ctl_format_time(char *buf, size_t size, uint64_t usec) {
        time_t t = (time_t)(usec / USEC_PER_SEC);
        struct tm tm;

        if (usec == 0 || !localtime_r(&t, &tm)) {
                snprintf(buf, size, "-");
                return buf;
        }
        size_t n = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(buf + n, size - n, ".%03" PRIu64, (usec % USEC_PER_SEC) / 1000);
        return buf;
}
