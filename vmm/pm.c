/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "macro.h"
#include "pm.h"

static void update_sci(Pm *pm) {
        int level = (pm->s.sts & pm->s.en) != 0;

        if (level != pm->sci_level) {
                pm->sci_level = level;
                if (pm->set_irq)
                        pm->set_irq(pm->opaque, level);
        }
}

static uint16_t *reg(Pm *pm, uint16_t off) {
        switch (off & ~1) {
        case 0:
                return &pm->s.sts;
        case 2:
                return &pm->s.en;
        case 4:
                return &pm->s.cnt;
        default:
                return NULL;
        }
}

static void pm_read(void *opaque, uint16_t off, uint8_t *data, unsigned size) {
        Pm *pm = opaque;
        uint16_t *r, v = 0;

        pthread_mutex_lock(&pm->lock);
        r = reg(pm, off);
        if (r)
                v = *r;
        pthread_mutex_unlock(&pm->lock);
        if (off & 1)
                v >>= 8;
        memset(data, 0, size);
        data[0] = (uint8_t)v;
        if (size >= 2 && !(off & 1))
                data[1] = (uint8_t)(v >> 8);
}

static void pm_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size) {
        Pm *pm = opaque;
        uint16_t *r, v;
        bool poweroff = false;

        v = data[0];
        if (size >= 2)
                v |= (uint16_t)(data[1] << 8);
        if (off & 1) {
                v = (uint16_t)(v << 8);
                off &= (uint16_t)~1;
        }

        pthread_mutex_lock(&pm->lock);
        r = reg(pm, off);
        if (r == &pm->s.sts)
                pm->s.sts &= (uint16_t)~v; /* write one to clear */
        else if (r == &pm->s.en)
                pm->s.en = v;
        else if (r == &pm->s.cnt) {
                pm->s.cnt = v & (uint16_t)~PM1_CNT_SLP_EN;
                /* SLP_EN with SLP_TYP 0 is S5 (soft off), as on QEMU q35. */
                if ((v & PM1_CNT_SLP_EN) && ((v >> 10) & 7) == 0)
                        poweroff = true;
        }
        update_sci(pm);
        pthread_mutex_unlock(&pm->lock);

        if (poweroff && pm->event)
                pm->event(pm->opaque, PM_EVENT_POWEROFF);
}

static void reset_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size) {
        Pm *pm = opaque;

        /* Bit 2 starts the reset (bit 1 selects hard reset; both mean reset here). */
        if (data[0] & 0x04 && pm->event)
                pm->event(pm->opaque, PM_EVENT_RESET);
        (void)off;
        (void)size;
}

static void reset_read(void *opaque, uint16_t off, uint8_t *data, unsigned size) {
        memset(data, 0, size);
}

const PioOps pm_pio_ops = {
        .name = "acpi-pm",
        .read = pm_read,
        .write = pm_write,
};

const PioOps pm_reset_pio_ops = {
        .name = "reset-control",
        .read = reset_read,
        .write = reset_write,
};

void pm_init(Pm *pm, void (*set_irq)(void *, int), void (*event)(void *, PmEvent), void *opaque) {
        *pm = (Pm){ .set_irq = set_irq, .event = event, .opaque = opaque };
        pthread_mutex_init(&pm->lock, NULL);
}

void pm_done(Pm *pm) {
        pthread_mutex_destroy(&pm->lock);
}

void pm_press_power_button(Pm *pm) {
        pthread_mutex_lock(&pm->lock);
        pm->s.sts |= PM1_PWRBTN;
        update_sci(pm);
        pthread_mutex_unlock(&pm->lock);
}

void pm_get_state(Pm *pm, PmState *ret) {
        pthread_mutex_lock(&pm->lock);
        *ret = pm->s;
        pthread_mutex_unlock(&pm->lock);
}

void pm_set_state(Pm *pm, const PmState *s) {
        pthread_mutex_lock(&pm->lock);
        pm->s = *s;
        pm->sci_level = -1;
        update_sci(pm);
        pthread_mutex_unlock(&pm->lock);
}

/* --- state contract --- */

static void pm_dev_reset(void *opaque) {
        pm_set_state(opaque, &(PmState){});
}

static int pm_dev_save(void *opaque, void *buf, size_t size) {
        PmState s;

        pm_get_state(opaque, &s);
        memcpy(buf, &s, MIN(size, sizeof s));
        return 0;
}

static int pm_dev_load(void *opaque, uint16_t version, const void *data, size_t size) {
        PmState s;

        memcpy(&s, data, MIN(size, sizeof s));
        (void)version;
        pm_set_state(opaque, &s);
        return 0;
}

const DeviceOps pm_device_ops = {
        .name = "acpi-pm",
        .section = PM_STATE_SECTION,
        .version = 1,
        .min_version = 1,
        .phase = DEVICE_LOAD_EARLY,
        .size = sizeof(PmState),
        .reset = pm_dev_reset,
        .save = pm_dev_save,
        .load = pm_dev_load,
};
