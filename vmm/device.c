/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdio.h>

#include "device.h"
#include "log.h"
#include "macro.h"

size_t device_state_size(const Device *d) {
        if (d->ops->size)
                return d->ops->size;
        return d->ops->save_size ? d->ops->save_size(d->opaque) : 0;
}

int device_save(const Device *d, StateWriter *w, void **scratch, size_t *scratch_size) {
        size_t size = device_state_size(d);
        int r;

        if (size > STATE_MAX_SECTION_SIZE)
                return -E2BIG;
        if (size > *scratch_size) {
                void *b = realloc(*scratch, size);
                if (!b)
                        return -ENOMEM;
                *scratch = b;
                *scratch_size = size;
        }
        r = d->ops->save(d->opaque, *scratch, size);
        if (r < 0)
                return r;
        state_writer_add(w, d->ops->section, d->ops->version, d->instance, *scratch, size);
        return 0;
}

static int refuse(const Device *d, char *err, size_t err_size, const char *fmt, ...) _printf_(4, 5);
static int refuse(const Device *d, char *err, size_t err_size, const char *fmt, ...) {
        char what[160];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        if (err && err_size > 0) {
                if (d->ops->per_vcpu)
                        snprintf(err, err_size, "%s of vCPU %u: %s", d->ops->name, d->instance, what);
                else
                        snprintf(err, err_size, "%s: %s", d->ops->name, what);
        }
        return log_debug_errno(-EBADMSG, "state: section %u (%s/%u) refused: %s", d->ops->section,
                               d->ops->name, d->instance, what);
}

int device_check(const Device *d, const StateSection *s, char *err, size_t err_size) {
        const DeviceOps *o = d->ops;

        if (s->version < o->min_version || s->version > o->version) {
                if (o->min_version == o->version)
                        return refuse(d, err, err_size, "section version %u, this build reads %u",
                                      s->version, o->version);
                return refuse(d, err, err_size, "section version %u, this build reads %u to %u",
                              s->version, o->min_version, o->version);
        }
        if (!o->variable) {
                size_t want = device_state_size(d);
                if (s->size != want)
                        return refuse(d, err, err_size, "section of %u bytes, want %zu", s->size, want);
        }
        if (o->check && o->check(d->opaque, s->version, s->data, s->size) < 0)
                return refuse(d, err, err_size, "invalid contents (version %u, %u bytes)", s->version,
                              s->size);
        return 0;
}

int device_load(const Device *d, const StateSection *s) {
        return d->ops->load(d->opaque, s->version, s->data, s->size);
}

void device_reset(const Device *d) {
        if (d->ops->reset)
                d->ops->reset(d->opaque);
}
