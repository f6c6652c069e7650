/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vmmd test guest: COM1 output (ring 0 only).
 *
 * Only THR (0x3f8, write) and LSR (0x3fd, read) are touched: no UART set-up.
 * Every instruction here is emulated on kvm_pvm, so the code stays short.
 */
#include "guest.h"

#define COM1_THR 0x3f8
#define COM1_LSR 0x3fd
#define LSR_THRE 0x20

#define SPIN_MAX 100000
#define SPIN_DEAD 16

/* Shrinks after a time-out so a dead UART cannot stall the timer handler. */
static uint32_t spin_limit = SPIN_MAX;

void con_putc(char c)
{
        uint32_t n = 0;

        while (!(inb(COM1_LSR) & LSR_THRE)) {
                if (++n >= spin_limit) {
                        spin_limit = SPIN_DEAD;
                        break;
                }
        }
        outb(COM1_THR, (uint8_t)c);
}

void con_puts(const char *s)
{
        while (*s)
                con_putc(*s++);
}

void con_dec(uint64_t v)
{
        char buf[20];
        int n = 0;

        do {
                buf[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        while (n)
                con_putc(buf[--n]);
}

void con_hex(uint64_t v)
{
        char buf[16];
        int n = 0;

        do {
                buf[n++] = "0123456789abcdef"[v & 15];
                v >>= 4;
        } while (v);
        con_putc('0');
        con_putc('x');
        while (n)
                con_putc(buf[--n]);
}
