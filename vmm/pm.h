/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <pthread.h>
#include <stdint.h>

#include "device.h"
#include "pio.h"

/* Power management: the ACPI PM1a event and control registers at the ports QEMU's q35 uses
 * (0x600 status, 0x602 enable, 0x604 control) so the same guest powers off under both, the
 * power button (PM1 status bit 8, SCI on IRQ 9), and the reset control register at 0xcf9. */

#define PM_BASE 0x600
#define PM_LEN 8
#define PM_RESET_PORT 0xcf9
#define PM_SCI_IRQ 9
#define PM_STATE_SECTION 8

#define PM1_PWRBTN 0x0100
#define PM1_CNT_SLP_EN 0x2000

typedef enum PmEvent {
        PM_EVENT_POWEROFF,
        PM_EVENT_RESET,
} PmEvent;

typedef struct PmState {
        uint16_t sts, en, cnt;
} PmState;

typedef struct Pm {
        pthread_mutex_t lock;
        PmState s;
        int sci_level;
        void (*set_irq)(void *opaque, int level);
        void (*event)(void *opaque, PmEvent e);
        void *opaque;
} Pm;

extern const PioOps pm_pio_ops;
extern const PioOps pm_reset_pio_ops;
/* State section: PmState as it is in memory; the opaque is the Pm. */
extern const DeviceOps pm_device_ops;

void pm_init(Pm *pm, void (*set_irq)(void *, int), void (*event)(void *, PmEvent), void *opaque);
void pm_done(Pm *pm);
/* Presses the power button: the guest sees PWRBTN_STS and, if enabled, an SCI. */
void pm_press_power_button(Pm *pm);
void pm_get_state(Pm *pm, PmState *ret);
void pm_set_state(Pm *pm, const PmState *s);
