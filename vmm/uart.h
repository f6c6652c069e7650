/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "pio.h"

/* A 16550A-compatible UART (the 8250 family) for COM1: transmit goes to an output callback
 * at once, receive has a FIFO filled from the console, interrupts are level-triggered. */

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ 4
#define UART_FIFO_SIZE 64
#define UART_STATE_SECTION 7

typedef struct UartState {
        uint8_t dll, dlm, ier, lcr, mcr, scr, fcr;
        uint8_t thr_ipending;
        uint8_t rx_count;
        uint8_t rx[UART_FIFO_SIZE];
} UartState;

typedef struct Uart {
        pthread_mutex_t lock;
        UartState s; /* guarded by lock */
        int irq_level;
        void (*set_irq)(void *opaque, int level);
        void (*output)(void *opaque, const uint8_t *buf, size_t n);
        /* Called (with the UART locked) when a full receive FIFO gets room again. */
        void (*rx_space)(void *opaque);
        void *opaque;
} Uart;

extern const PioOps uart_pio_ops;
/* State section: UartState as it is in memory; the opaque is the Uart. */
extern const DeviceOps uart_device_ops;

void uart_init(Uart *u, void (*set_irq)(void *, int), void (*output)(void *, const uint8_t *, size_t),
               void *opaque);
void uart_done(Uart *u);
/* Feeds console input; returns how many bytes the FIFO took. */
size_t uart_receive(Uart *u, const uint8_t *buf, size_t n);
/* Free space in the receive FIFO. */
size_t uart_rx_space(Uart *u);
void uart_get_state(Uart *u, UartState *ret);
int uart_set_state(Uart *u, const UartState *s);
