/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "macro.h"
#include "uart.h"

enum {
        REG_RBR_THR = 0,
        REG_IER = 1,
        REG_IIR_FCR = 2,
        REG_LCR = 3,
        REG_MCR = 4,
        REG_LSR = 5,
        REG_MSR = 6,
        REG_SCR = 7,
};

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xc0
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

/* Called with the lock held. */
static void update_irq(Uart *u) {
        UartState *s = &u->s;
        int level = ((s->ier & IER_RDI) && s->rx_count > 0) || ((s->ier & IER_THRI) && s->thr_ipending);

        if (level != u->irq_level) {
                u->irq_level = level;
                if (u->set_irq)
                        u->set_irq(u->opaque, level);
        }
}

static void rx_push(UartState *s, uint8_t b) {
        if (s->rx_count < UART_FIFO_SIZE)
                s->rx[s->rx_count++] = b;
}

static void uart_read(void *opaque, uint16_t off, uint8_t *data, unsigned size) {
        Uart *u = opaque;
        UartState *s = &u->s;
        uint8_t v = 0;

        pthread_mutex_lock(&u->lock);
        switch (off) {
        case REG_RBR_THR:
                if (s->lcr & LCR_DLAB)
                        v = s->dll;
                else if (s->rx_count > 0) {
                        bool was_full = s->rx_count == UART_FIFO_SIZE;
                        v = s->rx[0];
                        memmove(s->rx, s->rx + 1, --s->rx_count);
                        if (was_full && u->rx_space)
                                u->rx_space(u->opaque);
                }
                break;
        case REG_IER:
                v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
                break;
        case REG_IIR_FCR:
                if ((s->ier & IER_RDI) && s->rx_count > 0)
                        v = IIR_RDI;
                else if ((s->ier & IER_THRI) && s->thr_ipending) {
                        v = IIR_THRI;
                        s->thr_ipending = 0; /* reading IIR acknowledges THRE */
                } else
                        v = IIR_NO_INT;
                if (s->fcr & 0x01)
                        v |= IIR_FIFO;
                break;
        case REG_LCR:
                v = s->lcr;
                break;
        case REG_MCR:
                v = s->mcr;
                break;
        case REG_LSR:
                v = LSR_THRE | LSR_TEMT | (s->rx_count > 0 ? LSR_DR : 0);
                break;
        case REG_MSR:
                if (s->mcr & MCR_LOOP)
                        v = (uint8_t)(((s->mcr & MCR_DTR) ? MSR_DSR : 0) |
                                      ((s->mcr & MCR_RTS) ? MSR_CTS : 0) |
                                      ((s->mcr & MCR_OUT1) ? MSR_RI : 0) |
                                      ((s->mcr & MCR_OUT2) ? MSR_DCD : 0));
                else
                        v = MSR_DCD | MSR_DSR | MSR_CTS;
                break;
        case REG_SCR:
                v = s->scr;
                break;
        }
        update_irq(u);
        pthread_mutex_unlock(&u->lock);

        memset(data, 0, size);
        data[0] = v;
}

static void uart_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size) {
        Uart *u = opaque;
        UartState *s = &u->s;
        uint8_t v = data[0];
        bool emit = false;

        pthread_mutex_lock(&u->lock);
        switch (off) {
        case REG_RBR_THR:
                if (s->lcr & LCR_DLAB)
                        s->dll = v;
                else {
                        if (s->mcr & MCR_LOOP)
                                rx_push(s, v);
                        else
                                emit = true;
                        /* Transmission is instantaneous: THR is empty again at once. */
                        s->thr_ipending = 1;
                }
                break;
        case REG_IER:
                if (s->lcr & LCR_DLAB)
                        s->dlm = v;
                else {
                        if (!(s->ier & IER_THRI) && (v & IER_THRI))
                                s->thr_ipending = 1;
                        s->ier = v & 0x0f;
                }
                break;
        case REG_IIR_FCR:
                s->fcr = v & 0xc9;
                if (v & 0x02) /* clear receive FIFO */
                        s->rx_count = 0;
                break;
        case REG_LCR:
                s->lcr = v;
                break;
        case REG_MCR:
                s->mcr = v & 0x1f;
                break;
        case REG_SCR:
                s->scr = v;
                break;
        default: /* LSR and MSR are read-only */
                break;
        }
        update_irq(u);
        pthread_mutex_unlock(&u->lock);

        /* Output outside the lock: the sink may block briefly. */
        if (emit && u->output)
                u->output(u->opaque, &v, 1);
        (void)size;
}

const PioOps uart_pio_ops = {
        .name = "uart",
        .read = uart_read,
        .write = uart_write,
};

/* Power-on state: 8N1 at 9600 baud, OUT2 (the PC's interrupt gate) on, nothing pending. */
static const UartState uart_power_on = {
        .lcr = 0x03,
        .mcr = MCR_OUT2,
        .dll = 0x0c,
};

void uart_init(Uart *u, void (*set_irq)(void *, int), void (*output)(void *, const uint8_t *, size_t),
               void *opaque) {
        *u = (Uart){
                .set_irq = set_irq,
                .output = output,
                .opaque = opaque,
        };
        pthread_mutex_init(&u->lock, NULL);
        u->s = uart_power_on;
}

void uart_done(Uart *u) {
        pthread_mutex_destroy(&u->lock);
}

size_t uart_receive(Uart *u, const uint8_t *buf, size_t n) {
        size_t taken;

        pthread_mutex_lock(&u->lock);
        taken = MIN(n, (size_t)(UART_FIFO_SIZE - u->s.rx_count));
        memcpy(u->s.rx + u->s.rx_count, buf, taken);
        u->s.rx_count = (uint8_t)(u->s.rx_count + taken);
        update_irq(u);
        pthread_mutex_unlock(&u->lock);
        return taken;
}

size_t uart_rx_space(Uart *u) {
        size_t n;

        pthread_mutex_lock(&u->lock);
        n = UART_FIFO_SIZE - u->s.rx_count;
        pthread_mutex_unlock(&u->lock);
        return n;
}

void uart_get_state(Uart *u, UartState *ret) {
        pthread_mutex_lock(&u->lock);
        *ret = u->s;
        pthread_mutex_unlock(&u->lock);
}

static int uart_check_state(const UartState *s) {
        return s->rx_count > UART_FIFO_SIZE ? -EBADMSG : 0;
}

int uart_set_state(Uart *u, const UartState *s) {
        if (uart_check_state(s) < 0)
                return -EBADMSG;
        pthread_mutex_lock(&u->lock);
        u->s = *s;
        u->s.ier &= 0x0f;
        u->irq_level = -1; /* force the line to be driven to its restored level */
        update_irq(u);
        pthread_mutex_unlock(&u->lock);
        return 0;
}

/* --- state contract --- */

static void uart_dev_reset(void *opaque) {
        (void)uart_set_state(opaque, &uart_power_on);
}

static int uart_dev_save(void *opaque, void *buf, size_t size) {
        UartState s;

        uart_get_state(opaque, &s);
        memcpy(buf, &s, MIN(size, sizeof s));
        return 0;
}

static int uart_dev_check(void *opaque, uint16_t version, const void *data, size_t size) {
        UartState s;

        memcpy(&s, data, MIN(size, sizeof s));
        (void)opaque;
        (void)version;
        return uart_check_state(&s);
}

static int uart_dev_load(void *opaque, uint16_t version, const void *data, size_t size) {
        UartState s;

        memcpy(&s, data, MIN(size, sizeof s));
        (void)version;
        return uart_set_state(opaque, &s);
}

const DeviceOps uart_device_ops = {
        .name = "uart",
        .section = UART_STATE_SECTION,
        .version = 1,
        .min_version = 1,
        .phase = DEVICE_LOAD_EARLY,
        .size = sizeof(UartState),
        .reset = uart_dev_reset,
        .save = uart_dev_save,
        .check = uart_dev_check,
        .load = uart_dev_load,
};
