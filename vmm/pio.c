/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "macro.h"
#include "pio.h"

int pio_bus_register(PioBus *bus, uint16_t base, uint16_t len, const PioOps *ops, void *opaque) {
        if (len == 0 || (uint32_t)base + len > 0x10000)
                return -EINVAL;
        for (unsigned i = 0; i < bus->n; i++) {
                const PioRange *r = &bus->ranges[i];
                if (base < r->base + r->len && r->base < base + len)
                        return -EEXIST;
        }
        if (bus->n >= PIO_MAX_DEVICES)
                return -ENOSPC;
        bus->ranges[bus->n++] = (PioRange){ base, len, ops, opaque };
        return 0;
}

bool pio_bus_dispatch(const PioBus *bus, uint16_t port, bool is_write, uint8_t *data, unsigned size) {
        for (unsigned i = 0; i < bus->n; i++) {
                const PioRange *r = &bus->ranges[i];
                if (port < r->base || port >= r->base + r->len)
                        continue;
                if (is_write) {
                        if (r->ops->write)
                                r->ops->write(r->opaque, (uint16_t)(port - r->base), data, size);
                } else if (r->ops->read)
                        r->ops->read(r->opaque, (uint16_t)(port - r->base), data, size);
                else
                        memset(data, 0xff, size);
                return true;
        }
        if (!is_write)
                memset(data, 0xff, size);
        return false;
}
