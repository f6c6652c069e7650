/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <syslog.h>

#include "macro.h"

/* Logging: to the journal (with structured fields) when stderr is connected to it, else
 * plain lines on stderr. Library code (vmm/, migration/) logs at debug level only. */

void log_set_max_level(int level);
int log_get_max_level(void);
void log_open(const char *ident);

/* Returns -abs(error) so callers can write "return log_error_errno(r, ...)". %m expands to
 * strerror(error). 'fields' is NULL or a NULL-terminated list of "KEY=value" strings that
 * are attached as journal fields. */
int log_internal(int level, int error, const char *const *fields, const char *file, int line,
                 const char *func, const char *format, ...) _printf_(7, 8);

#define log_full_errno(level, error, ...)                                                          \
        ({                                                                                         \
                int _l = (level), _e = (error);                                                    \
                (log_get_max_level() >= _l)                                                        \
                        ? log_internal(_l, _e, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)    \
                        : -abs(_e);                                                                \
        })
#define log_full(level, ...) (void)log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)

/* With journal fields, e.g. log_struct(LOG_INFO, ((const char*[]){"VM=web", NULL}), "..."). */
#define log_struct_errno(level, error, fields, ...)                                                \
        log_internal(level, error, fields, __FILE__, __LINE__, __func__, __VA_ARGS__)
