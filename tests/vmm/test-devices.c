/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The UART and the power-management device, driven through the port I/O bus exactly as a
 * vCPU's KVM_EXIT_IO would. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "pio.h"
#include "pm.h"
#include "uart.h"

typedef struct Sink {
        int irq;
        int irq_changes;
        char out[256];
        size_t n_out;
        int events[4];
        int n_events;
} Sink;

static void sink_irq(void *o, int level) {
        Sink *s = o;
        s->irq = level;
        s->irq_changes++;
}
static void sink_out(void *o, const uint8_t *b, size_t n) {
        Sink *s = o;
        memcpy(s->out + s->n_out, b, n);
        s->n_out += n;
}
static void sink_event(void *o, PmEvent e) {
        Sink *s = o;
        s->events[s->n_events++] = (int)e;
}

static uint8_t inb(PioBus *bus, uint16_t port) {
        uint8_t d[4];
        assert_true(pio_bus_dispatch(bus, port, false, d, 1));
        return d[0];
}
static void outb(PioBus *bus, uint16_t port, uint8_t v) {
        assert_true(pio_bus_dispatch(bus, port, true, &v, 1));
}
static void outw(PioBus *bus, uint16_t port, uint16_t v) {
        uint8_t d[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
        assert_true(pio_bus_dispatch(bus, port, true, d, 2));
}
static uint16_t inw(PioBus *bus, uint16_t port) {
        uint8_t d[2];
        assert_true(pio_bus_dispatch(bus, port, false, d, 2));
        return (uint16_t)(d[0] | d[1] << 8);
}

static void test_uart(void **state) {
        PioBus bus = {};
        Uart u;
        Sink s = {};
        UartState st;

        uart_init(&u, sink_irq, sink_out, &s);
        assert_int_equal(pio_bus_register(&bus, UART_COM1_BASE, 8, &uart_pio_ops, &u), 0);
        assert_int_equal(pio_bus_register(&bus, UART_COM1_BASE + 4, 2, &uart_pio_ops, &u), -EEXIST);

        /* Transmit: LSR says THR empty; bytes reach the sink. */
        assert_int_equal(inb(&bus, 0x3fd) & 0x60, 0x60);
        outb(&bus, 0x3f8, 'h');
        outb(&bus, 0x3f8, 'i');
        assert_int_equal(s.n_out, 2);
        assert_memory_equal(s.out, "hi", 2);

        /* Divisor latch does not transmit. */
        outb(&bus, 0x3fb, 0x83);
        outb(&bus, 0x3f8, 0x01);
        outb(&bus, 0x3f9, 0x00);
        outb(&bus, 0x3fb, 0x03);
        assert_int_equal(s.n_out, 2);
        assert_int_equal(inb(&bus, 0x3f8), 0); /* empty RBR */

        /* Receive with RX interrupts: line goes up, IIR says RDI, down once drained. */
        outb(&bus, 0x3f9, 0x01);
        assert_int_equal(s.irq, 0);
        assert_int_equal(uart_receive(&u, (const uint8_t *)"ab", 2), 2);
        assert_int_equal(s.irq, 1);
        assert_int_equal(inb(&bus, 0x3fa) & 0x0f, 0x04);
        assert_int_equal(inb(&bus, 0x3fd) & 1, 1);
        assert_int_equal(inb(&bus, 0x3f8), 'a');
        assert_int_equal(inb(&bus, 0x3f8), 'b');
        assert_int_equal(s.irq, 0);
        assert_int_equal(inb(&bus, 0x3fd) & 1, 0);
        assert_int_equal(inb(&bus, 0x3fa) & 0x01, 1);

        /* THR-empty interrupt: raised when enabled, acknowledged by reading IIR. */
        outb(&bus, 0x3f9, 0x02);
        assert_int_equal(s.irq, 1);
        assert_int_equal(inb(&bus, 0x3fa) & 0x0f, 0x02);
        assert_int_equal(s.irq, 0);
        outb(&bus, 0x3f8, 'x');
        assert_int_equal(s.irq, 1);
        outb(&bus, 0x3f9, 0x00);
        assert_int_equal(s.irq, 0);

        /* FIFO full: extra input is refused, not lost silently. */
        uint8_t many[UART_FIFO_SIZE + 5];
        memset(many, 'z', sizeof many);
        assert_int_equal(uart_receive(&u, many, sizeof many), UART_FIFO_SIZE);
        assert_int_equal(uart_rx_space(&u), 0);

        /* Loopback: THR goes to RBR, MSR mirrors MCR. */
        outb(&bus, 0x3fa, 0x02); /* clear RX FIFO */
        outb(&bus, 0x3fc, 0x10 | 0x02);
        assert_int_equal(inb(&bus, 0x3fe) & 0xf0, 0x10);
        outb(&bus, 0x3f8, 'L');
        assert_int_equal(inb(&bus, 0x3f8), 'L');
        assert_int_equal(s.n_out, 3);

        /* Scratch register and state round trip. */
        outb(&bus, 0x3ff, 0x5a);
        uart_get_state(&u, &st);
        assert_int_equal(st.scr, 0x5a);
        st.rx_count = UART_FIFO_SIZE + 1;
        assert_int_equal(uart_set_state(&u, &st), -EBADMSG);
        st.rx_count = 1;
        st.rx[0] = 'q';
        st.ier = 0x01;
        st.mcr = 0;
        assert_int_equal(uart_set_state(&u, &st), 0);
        assert_int_equal(s.irq, 1);
        assert_int_equal(inb(&bus, 0x3f8), 'q');
        uart_done(&u);
}

static void test_pm(void **state) {
        PioBus bus = {};
        Pm pm;
        Sink s = {};

        pm_init(&pm, sink_irq, sink_event, &s);
        assert_int_equal(pio_bus_register(&bus, PM_BASE, PM_LEN, &pm_pio_ops, &pm), 0);
        assert_int_equal(pio_bus_register(&bus, PM_RESET_PORT, 1, &pm_reset_pio_ops, &pm), 0);

        /* Power button without enable: status only, no SCI. */
        pm_press_power_button(&pm);
        assert_int_equal(inw(&bus, 0x600) & PM1_PWRBTN, PM1_PWRBTN);
        assert_int_equal(s.irq, 0);
        outw(&bus, 0x602, PM1_PWRBTN);
        assert_int_equal(s.irq, 1);
        outw(&bus, 0x600, PM1_PWRBTN); /* write one to clear */
        assert_int_equal(inw(&bus, 0x600), 0);
        assert_int_equal(s.irq, 0);

        /* SLP_EN with a non-S5 sleep type does nothing; with type 0 it powers off. */
        outw(&bus, 0x604, 0x2000 | (5 << 10));
        assert_int_equal(s.n_events, 0);
        outw(&bus, 0x604, 0x2000);
        assert_int_equal(s.n_events, 1);
        assert_int_equal(s.events[0], PM_EVENT_POWEROFF);

        /* Reset control: bit 2 resets. */
        outb(&bus, 0xcf9, 0x02);
        assert_int_equal(s.n_events, 1);
        outb(&bus, 0xcf9, 0x06);
        assert_int_equal(s.n_events, 2);
        assert_int_equal(s.events[1], PM_EVENT_RESET);

        /* Unclaimed ports read as all ones. */
        uint8_t d[2];
        assert_false(pio_bus_dispatch(&bus, 0x1234, false, d, 2));
        assert_int_equal(d[0], 0xff);
        assert_int_equal(d[1], 0xff);
        pm_done(&pm);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_uart),
                cmocka_unit_test(test_pm),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
