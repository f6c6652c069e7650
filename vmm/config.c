/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>

#include <json-c/json.h>

#include "config.h"
#include "kernel-probe.h"

static const char *const serial_mode_table[_SERIAL_MODE_MAX] = {
        [SERIAL_MODE_NONE] = "none",
        [SERIAL_MODE_FILE] = "file",
        [SERIAL_MODE_PTY] = "pty",
};

const char *serial_mode_to_string(SerialMode m) {
        return m >= 0 && m < _SERIAL_MODE_MAX ? serial_mode_table[m] : NULL;
}

const char *kernel_format_to_string(KernelFormat f) {
        switch (f) {
        case KERNEL_FORMAT_PVH_ELF:
                return "pvh-elf";
        case KERNEL_FORMAT_BZIMAGE:
                return "bzimage";
        default:
                return "unknown";
        }
}

VmConfig *vm_config_free(VmConfig *c) {
        if (!c)
                return NULL;
        free(c->kernel);
        free(c->initramfs);
        free(c->cmdline);
        free(c->serial_path);
        free(c);
        return NULL;
}

int vm_config_copy(const VmConfig *c, VmConfig **ret) {
        _cleanup_(vm_config_freep) VmConfig *n = calloc(1, sizeof *n);

        if (!n)
                return -ENOMEM;
        *n = *c;
        n->kernel = n->initramfs = n->cmdline = n->serial_path = NULL;
        if ((c->kernel && !(n->kernel = strdup(c->kernel))) ||
            (c->initramfs && !(n->initramfs = strdup(c->initramfs))) ||
            !(n->cmdline = strdup(c->cmdline ? c->cmdline : "")) ||
            (c->serial_path && !(n->serial_path = strdup(c->serial_path))))
                return -ENOMEM;
        *ret = TAKE_PTR(n);
        return 0;
}

static int fail(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                if (vasprintf(ret_error, fmt, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

static const char *json_type_name(json_object *o) {
        return json_type_to_name(json_object_get_type(o));
}

/* Reads a non-negative integer. json-c stores integers as int64; a double or a string is
 * a type error, as is a negative number. */
static int get_uint(json_object *o, const char *key, uint64_t min, uint64_t max, uint64_t *ret,
                    char **ret_error) {
        int64_t v;

        if (!json_object_is_type(o, json_type_int))
                return fail(ret_error, -EINVAL, "%s: expected an integer, got %s", key,
                            json_type_name(o));
        errno = 0;
        v = json_object_get_int64(o);
        if (v < 0 || (uint64_t)v < min || (uint64_t)v > max || errno == ERANGE)
                return fail(ret_error, -EINVAL,
                            "%s: must be between %" PRIu64 " and %" PRIu64 ", got %s", key, min,
                            max, json_object_to_json_string(o));
        *ret = (uint64_t)v;
        return 0;
}

static int get_string(json_object *o, const char *key, size_t max, char **ret, char **ret_error) {
        const char *s;
        size_t n;

        if (!json_object_is_type(o, json_type_string))
                return fail(ret_error, -EINVAL, "%s: expected a string, got %s", key,
                            json_type_name(o));
        s = json_object_get_string(o);
        n = (size_t)json_object_get_string_len(o);
        if (strlen(s) != n)
                return fail(ret_error, -EINVAL, "%s: contains a NUL byte", key);
        if (n > max)
                return fail(ret_error, -EINVAL, "%s: longer than %zu bytes", key, max);
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int get_path(json_object *o, const char *key, char **ret, char **ret_error) {
        _cleanup_free_ char *p = NULL;
        int r;

        r = get_string(o, key, VM_CONFIG_MAX_PATH, &p, ret_error);
        if (r < 0)
                return r;
        if (p[0] != '/')
                return fail(ret_error, -EINVAL, "%s: must be an absolute path, got \"%s\"", key, p);
        *ret = TAKE_PTR(p);
        return 0;
}

static int check_readable(const char *key, const char *path, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return fail(ret_error, -EINVAL, "%s: cannot open %s: %s", key, path,
                            strerror(errno));
        if (fstat(fd, &st) < 0)
                return fail(ret_error, -EINVAL, "%s: cannot stat %s: %s", key, path,
                            strerror(errno));
        if (!S_ISREG(st.st_mode))
                return fail(ret_error, -EINVAL, "%s: %s is not a regular file", key, path);
        return 0;
}

static int parse_serial(json_object *o, VmConfig *c, char **ret_error) {
        json_object_object_foreach(o, key, val) {
                if (strcmp(key, "mode") == 0) {
                        _cleanup_free_ char *m = NULL;
                        int r = get_string(val, "serial.mode", 16, &m, ret_error);
                        if (r < 0)
                                return r;
                        if (strcmp(m, "file") == 0)
                                c->serial_mode = SERIAL_MODE_FILE;
                        else if (strcmp(m, "pty") == 0)
                                c->serial_mode = SERIAL_MODE_PTY;
                        else if (strcmp(m, "none") == 0)
                                c->serial_mode = SERIAL_MODE_NONE;
                        else
                                return fail(ret_error, -EINVAL,
                                            "serial.mode: must be \"file\", \"pty\" or \"none\", "
                                            "got \"%s\"",
                                            m);
                } else if (strcmp(key, "path") == 0) {
                        int r;
                        free(c->serial_path);
                        c->serial_path = NULL;
                        r = get_path(val, "serial.path", &c->serial_path, ret_error);
                        if (r < 0)
                                return r;
                } else
                        return fail(ret_error, -EINVAL, "serial.%s: unknown key", key);
        }

        if (c->serial_mode == SERIAL_MODE_FILE && !c->serial_path)
                return fail(ret_error, -EINVAL, "serial.path: required with mode \"file\"");
        if (c->serial_mode != SERIAL_MODE_FILE && c->serial_path)
                return fail(ret_error, -EINVAL, "serial.path: only valid with mode \"file\"");
        return 0;
}

static uint64_t host_memory_mib(void) {
        struct sysinfo si;

        if (sysinfo(&si) < 0)
                return UINT64_MAX;
        return (uint64_t)si.totalram * si.mem_unit / MiB;
}

int vm_config_parse(const char *json, VmConfig **ret, char **ret_error) {
        return vm_config_parse_flags(json, 0, ret, ret_error);
}

int vm_config_parse_flags(const char *json, unsigned flags, VmConfig **ret, char **ret_error) {
        _cleanup_(vm_config_freep) VmConfig *c = NULL;
        json_tokener *tok;
        json_object *root;
        enum json_tokener_error jerr;
        size_t len;
        bool have_vcpus = false, have_mem = false;
        int r = 0;

        if (!json)
                return fail(ret_error, -EINVAL, "config: empty");
        len = strlen(json);
        if (len > VM_CONFIG_MAX_JSON)
                return fail(ret_error, -E2BIG, "config: larger than %d bytes", VM_CONFIG_MAX_JSON);

        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        root = json_tokener_parse_ex(tok, json, (int)len);
        jerr = json_tokener_get_error(tok);
        if (!root || jerr != json_tokener_success ||
            json_tokener_get_parse_end(tok) != len) {
                size_t off = json_tokener_get_parse_end(tok);
                /* Trailing white space after a complete value is fine. */
                bool trailing_ws = root && jerr == json_tokener_success &&
                                   strspn(json + off, " \t\r\n") == len - off;
                if (!trailing_ws) {
                        r = fail(ret_error, -EINVAL, "config: malformed JSON at offset %zu: %s",
                                 off,
                                 jerr == json_tokener_success ? "unexpected trailing data"
                                 : jerr == json_tokener_continue ? "unexpected end of input"
                                                                  : json_tokener_error_desc(jerr));
                        json_object_put(root);
                        json_tokener_free(tok);
                        return r;
                }
        }
        json_tokener_free(tok);

        if (!json_object_is_type(root, json_type_object)) {
                r = fail(ret_error, -EINVAL, "config: expected a JSON object, got %s",
                         json_type_name(root));
                goto out;
        }

        c = calloc(1, sizeof *c);
        if (!c) {
                r = -ENOMEM;
                goto out;
        }

        json_object_object_foreach(root, key, val) {
                uint64_t u;

                if (strcmp(key, "vcpus") == 0) {
                        r = get_uint(val, "vcpus", 1, VM_CONFIG_MAX_VCPUS, &u, ret_error);
                        if (r < 0)
                                goto out;
                        c->vcpus = (unsigned)u;
                        have_vcpus = true;
                } else if (strcmp(key, "memory_mib") == 0) {
                        r = get_uint(val, "memory_mib", VM_CONFIG_MIN_MEMORY_MIB,
                                     VM_CONFIG_MAX_MEMORY_MIB, &u, ret_error);
                        if (r < 0)
                                goto out;
                        c->memory_mib = u;
                        have_mem = true;
                } else if (strcmp(key, "kernel") == 0) {
                        free(c->kernel);
                        c->kernel = NULL;
                        r = get_path(val, "kernel", &c->kernel, ret_error);
                        if (r < 0)
                                goto out;
                } else if (strcmp(key, "initramfs") == 0) {
                        free(c->initramfs);
                        c->initramfs = NULL;
                        if (json_object_is_type(val, json_type_null))
                                continue;
                        r = get_path(val, "initramfs", &c->initramfs, ret_error);
                        if (r < 0)
                                goto out;
                } else if (strcmp(key, "cmdline") == 0) {
                        free(c->cmdline);
                        c->cmdline = NULL;
                        r = get_string(val, "cmdline", VM_CONFIG_MAX_CMDLINE - 1, &c->cmdline,
                                       ret_error);
                        if (r < 0)
                                goto out;
                } else if (strcmp(key, "serial") == 0) {
                        if (!json_object_is_type(val, json_type_object)) {
                                r = fail(ret_error, -EINVAL, "serial: expected an object, got %s",
                                         json_type_name(val));
                                goto out;
                        }
                        r = parse_serial(val, c, ret_error);
                        if (r < 0)
                                goto out;
                } else {
                        r = fail(ret_error, -EINVAL, "%s: unknown key", key);
                        goto out;
                }
        }

        if (!have_vcpus)
                c->vcpus = 1;
        if (!have_mem) {
                r = fail(ret_error, -EINVAL, "memory_mib: required");
                goto out;
        }
        if (c->memory_mib > host_memory_mib()) {
                r = fail(ret_error, -EINVAL,
                         "memory_mib: %" PRIu64 " MiB is more than the host has (%" PRIu64 " MiB)",
                         c->memory_mib, host_memory_mib());
                goto out;
        }
        if (!c->kernel) {
                r = fail(ret_error, -EINVAL, "kernel: required");
                goto out;
        }
        if (!c->cmdline) {
                c->cmdline = strdup("");
                if (!c->cmdline) {
                        r = -ENOMEM;
                        goto out;
                }
        }

        if (flags & VM_CONFIG_PARSE_NO_FILES)
                goto done;
        r = check_readable("kernel", c->kernel, ret_error);
        if (r < 0)
                goto out;
        r = kernel_probe_file(c->kernel, &c->kernel_format);
        if (r < 0) {
                r = fail(ret_error, -EINVAL,
                         "kernel: %s is neither an ELF with a PVH entry note "
                         "(XEN_ELFNOTE_PHYS32_ENTRY) nor a bzImage",
                         c->kernel);
                goto out;
        }
        if (c->initramfs) {
                r = check_readable("initramfs", c->initramfs, ret_error);
                if (r < 0)
                        goto out;
        }

done:
        *ret = TAKE_PTR(c);
        r = 0;
out:
        json_object_put(root);
        return r;
}

static int parse_object(const char *what, const char *text, json_object **ret, char **ret_error) {
        json_object *o;

        if (strlen(text) > VM_CONFIG_MAX_JSON)
                return fail(ret_error, -E2BIG, "%s: larger than %d bytes", what,
                            VM_CONFIG_MAX_JSON);
        o = json_tokener_parse(text);
        if (!o)
                return fail(ret_error, -EINVAL, "%s: malformed JSON", what);
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return fail(ret_error, -EINVAL, "%s: expected a JSON object", what);
        }
        *ret = o;
        return 0;
}

static int merge_into(json_object *dst, json_object *src) {
        json_object_object_foreach(src, key, val) {
                json_object *cur;

                if (json_object_object_get_ex(dst, key, &cur) &&
                    json_object_is_type(cur, json_type_object) &&
                    json_object_is_type(val, json_type_object)) {
                        int r = merge_into(cur, val);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (json_object_object_add(dst, key, json_object_get(val)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int vm_config_merge_json(const char *base, const char *overlay, char **ret, char **ret_error) {
        json_object *b = NULL, *o = NULL;
        char *s;
        int r;

        r = parse_object("config", base, &b, ret_error);
        if (r < 0)
                return r;
        r = parse_object("config overlay", overlay, &o, ret_error);
        if (r < 0)
                goto out;
        r = merge_into(b, o);
        if (r < 0)
                goto out;
        s = strdup(json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        if (!s) {
                r = -ENOMEM;
                goto out;
        }
        *ret = s;
        r = 0;
out:
        json_object_put(b);
        json_object_put(o);
        return r;
}

char *vm_config_to_json(const VmConfig *c) {
        json_object *o, *serial;
        char *s;

        o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "vcpus", json_object_new_int64(c->vcpus));
        json_object_object_add(o, "memory_mib", json_object_new_int64((int64_t)c->memory_mib));
        json_object_object_add(o, "kernel", json_object_new_string(c->kernel));
        if (c->initramfs)
                json_object_object_add(o, "initramfs", json_object_new_string(c->initramfs));
        json_object_object_add(o, "cmdline", json_object_new_string(c->cmdline ? c->cmdline : ""));
        serial = json_object_new_object();
        json_object_object_add(serial, "mode",
                               json_object_new_string(serial_mode_to_string(c->serial_mode)));
        if (c->serial_path)
                json_object_object_add(serial, "path", json_object_new_string(c->serial_path));
        json_object_object_add(o, "serial", serial);
        s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        return s;
}
