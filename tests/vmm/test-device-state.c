/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The device state contract (device.h) without a VM: the UART's and the PM device's
 * save -> load -> save round trip and the refusals, and the state parser (state.c) over
 * the whole device table of a two-vCPU machine, whose KVM sections are built here. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "device-test.h"
#include "vm-internal.h"

static void no_irq(void *o, int level) {
        (void)o, (void)level;
}

/* The device's state as one saved section (its payload copied out). */
static size_t save_one(const Device *d, uint8_t *out, size_t out_size) {
        _cleanup_free_ uint8_t *buf = NULL;
        StateSection s = device_test_save(d, &buf);

        assert_int_equal(s.id, d->ops->section);
        assert_int_equal(s.version, d->ops->version);
        assert_int_equal(s.instance, d->instance);
        assert_int_equal(s.size, device_state_size(d));
        assert_true(s.size <= out_size);
        memcpy(out, s.data, s.size);
        return s.size;
}

/* save -> load into a fresh device -> save gives the same bytes; wrong versions and sizes
 * are refused with the device named, and leave it as it was. */
static void round_trip(const Device *a, const Device *b) {
        uint8_t s1[512], s2[512], before[512], err[256];
        size_t n1, n2;
        StateSection sec;

        n1 = save_one(a, s1, sizeof s1);
        sec = (StateSection){ .id = a->ops->section, .version = a->ops->version, .size = (uint32_t)n1, .data = s1 };
        assert_int_equal(device_check(b, &sec, NULL, 0), 0);
        assert_int_equal(device_load(b, &sec), 0);
        n2 = save_one(b, s2, sizeof s2);
        assert_int_equal(n1, n2);
        assert_memory_equal(s1, s2, n1);

        /* A version from the future, one from before the oldest, a short and a long section. */
        (void)save_one(b, before, sizeof before);
        struct {
                uint16_t version;
                uint32_t size;
                const char *want;
        } bad[] = {
                { a->ops->version + 1, (uint32_t)n1, "section version" },
                { 0, (uint32_t)n1, "section version" },
                { a->ops->version, (uint32_t)n1 - 1, "bytes, want" },
                { a->ops->version, (uint32_t)n1 + 8, "bytes, want" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                StateSection s = sec;
                char want_prefix[64];

                s.version = bad[i].version;
                s.size = bad[i].size;
                err[0] = 0;
                assert_int_equal(device_check(b, &s, (char *)err, sizeof err), -EBADMSG);
                snprintf(want_prefix, sizeof want_prefix, "%s: ", a->ops->name);
                assert_true(strncmp((char *)err, want_prefix, strlen(want_prefix)) == 0);
                assert_non_null(strstr((char *)err, bad[i].want));
        }
        n2 = save_one(b, s2, sizeof s2);
        assert_memory_equal(before, s2, n2);
}

static void test_uart_contract(void **state) {
        Uart a, b;
        Device da = { &uart_device_ops, &a, 0 }, db = { &uart_device_ops, &b, 0 };
        uint8_t v;
        uint8_t s[sizeof(UartState)];
        char err[256];
        StateSection sec;

        uart_init(&a, no_irq, NULL, NULL);
        uart_init(&b, no_irq, NULL, NULL);
        /* Something other than the power-on state: line settings, scratch, input waiting. */
        v = 0x1b, uart_pio_ops.write(&a, 3, &v, 1);
        v = 0x5a, uart_pio_ops.write(&a, 7, &v, 1);
        v = 0x01, uart_pio_ops.write(&a, 1, &v, 1);
        assert_int_equal(uart_receive(&a, (const uint8_t *)"hello", 5), 5);
        round_trip(&da, &db);

        /* A FIFO fuller than a FIFO can be is refused. */
        (void)save_one(&da, s, sizeof s);
        s[offsetof(UartState, rx_count)] = UART_FIFO_SIZE + 1;
        sec = (StateSection){ .id = UART_STATE_SECTION, .version = 1, .size = sizeof s, .data = s };
        assert_int_equal(device_check(&db, &sec, err, sizeof err), -EBADMSG);
        assert_non_null(strstr(err, "uart: invalid contents"));

        /* Reset is the power-on state: what a new UART has. */
        Uart c;
        Device dc = { &uart_device_ops, &c, 0 };
        uint8_t s1[sizeof(UartState)], s2[sizeof(UartState)];
        uart_init(&c, no_irq, NULL, NULL);
        device_reset(&da);
        (void)save_one(&da, s1, sizeof s1);
        (void)save_one(&dc, s2, sizeof s2);
        assert_memory_equal(s1, s2, sizeof s1);
        uart_done(&a);
        uart_done(&b);
        uart_done(&c);
        (void)state;
}

static void test_pm_contract(void **state) {
        Pm a, b;
        Device da = { &pm_device_ops, &a, 0 }, db = { &pm_device_ops, &b, 0 };
        uint8_t d[2] = { 0x00, 0x01 };
        uint8_t s1[sizeof(PmState)], s2[sizeof(PmState)];

        pm_init(&a, no_irq, NULL, NULL);
        pm_init(&b, no_irq, NULL, NULL);
        pm_pio_ops.write(&a, 2, d, 2); /* PWRBTN enabled */
        pm_press_power_button(&a);
        round_trip(&da, &db);
        device_reset(&db);
        memset(s2, 0, sizeof s2);
        (void)save_one(&db, s1, sizeof s1);
        assert_memory_equal(s1, s2, sizeof s1);
        pm_done(&a);
        pm_done(&b);
        (void)state;
}

/* --- the parser over a whole machine's table --- */

typedef struct Machine {
        Vm vm;
        Vcpu vcpus[2];
        uint32_t msr_indices[3];
} Machine;

static Machine *machine_new(void) {
        Machine *m = calloc(1, sizeof *m);

        assert_non_null(m);
        m->vm.n_vcpus = 2;
        m->vm.vcpus = m->vcpus;
        for (unsigned i = 0; i < 2; i++)
                m->vcpus[i] = (Vcpu){ .vm = &m->vm, .idx = i, .fd = -1 };
        m->vm.xsave_size = 4096;
        m->vm.n_msrs = 3;
        m->vm.msr_indices = m->msr_indices;
        m->vm.mem.size = 64 << 20;
        m->vm.vm_fd = -1;
        uart_init(&m->vm.uart, no_irq, NULL, NULL);
        pm_init(&m->vm.pm, no_irq, NULL, NULL);
        assert_int_equal(board_init_devices(&m->vm), 0);
        return m;
}

static void machine_free(Machine *m) {
        board_free_devices(&m->vm);
        uart_done(&m->vm.uart);
        pm_done(&m->vm.pm);
        free(m);
}

enum { MUT_NONE, MUT_VERSION, MUT_SIZE, MUT_DROP, MUT_DUP };

/* A stream as this machine would save it, the payloads zero but valid; the section of
 * (id, instance) changed as 'mut' says. */
static void build_stream(Machine *m, uint32_t id, uint16_t inst, int mut, uint8_t **ret, size_t *ret_size) {
        struct {
                uint32_t n_vcpus, reserved;
                uint64_t mem;
        } info = { 2, 0, 64 << 20 };
        StateWriter w;

        state_writer_init(&w);
        state_writer_add(&w, SEC_VMINFO, 1, 0, &info, sizeof info);
        for (unsigned i = 0; i < m->vm.n_devices; i++) {
                const Device *d = &m->vm.devices[i];
                size_t size = device_state_size(d);
                uint16_t version = d->ops->version;
                _cleanup_free_ uint8_t *p = calloc(1, size + 8);
                bool hit = d->ops->section == id && d->instance == inst;

                assert_non_null(p);
                if (d->ops == &pic_slave_device_ops)
                        p[0] = KVM_IRQCHIP_PIC_SLAVE;
                if (d->ops == &ioapic_device_ops)
                        p[0] = KVM_IRQCHIP_IOAPIC;
                if (d->ops == &msrs_device_ops)
                        p[0] = 3;
                if (hit && mut == MUT_DROP)
                        continue;
                if (hit && mut == MUT_VERSION)
                        version++;
                if (hit && mut == MUT_SIZE)
                        size += 8;
                state_writer_add(&w, d->ops->section, version, d->instance, p, size);
                if (hit && mut == MUT_DUP)
                        state_writer_add(&w, d->ops->section, version, d->instance, p, size);
        }
        assert_int_equal(state_writer_finish(&w, ret, ret_size), 0);
}

static void expect(Machine *m, uint32_t id, uint16_t inst, int mut, int want, const char *want_msg) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_free_ StateSection *sec = calloc(m->vm.n_devices, sizeof *sec);
        char err[256] = "";
        size_t size;

        build_stream(m, id, inst, mut, &buf, &size);
        assert_int_equal(vm_state_parse(&m->vm, buf, size, sec, err, sizeof err), want);
        if (want_msg && !strstr(err, want_msg))
                fail_msg("error '%s' does not say '%s'", err, want_msg);
}

static void test_parse(void **state) {
        Machine *m = machine_new();

        /* 7 machine devices, 9 sections per vCPU. */
        assert_int_equal(m->vm.n_devices, 7 + 2 * 9);
        expect(m, 0, 0, MUT_NONE, 0, NULL);
        expect(m, SEC_PIT, 0, MUT_VERSION, -EBADMSG, "pit: section version 2, this build reads 1");
        expect(m, SEC_CLOCK, 0, MUT_SIZE, -EBADMSG, "clock: section of");
        expect(m, SEC_UART, 0, MUT_VERSION, -EBADMSG, "uart: section version 2");
        expect(m, SEC_PM, 0, MUT_SIZE, -EBADMSG, "acpi-pm: section of 14 bytes, want 6");
        expect(m, SEC_VCPU_LAPIC, 1, MUT_VERSION, -EBADMSG, "lapic of vCPU 1: section version 2");
        expect(m, SEC_VCPU_LAPIC, 0, MUT_SIZE, -EBADMSG, "lapic of vCPU 0: section of 1032 bytes, want 1024");
        expect(m, SEC_VCPU_XSAVE, 1, MUT_SIZE, -EBADMSG, "xsave of vCPU 1: section of 4104 bytes, want 4096");
        expect(m, SEC_IOAPIC, 0, MUT_DROP, -EBADMSG, "ioapic missing");
        expect(m, SEC_VCPU_MSRS, 1, MUT_DROP, -EBADMSG, "msrs of vCPU 1 missing");
        expect(m, SEC_PIC_SLAVE, 0, MUT_DUP, -EBADMSG, "duplicate section 4 (pic-slave/0)");
        /* An MSR list longer than its count says. */
        expect(m, SEC_VCPU_MSRS, 0, MUT_SIZE, -EBADMSG, "msrs of vCPU 0: invalid contents");

        /* A third vCPU's section, an unknown section, another machine's description. */
        {
                _cleanup_free_ uint8_t *buf = NULL, *buf2 = NULL;
                _cleanup_free_ StateSection *sec = calloc(m->vm.n_devices, sizeof *sec);
                uint8_t regs[sizeof(struct kvm_regs)] = {};
                char err[256];
                size_t size;
                StateWriter w;
                StateReader r;
                StateSection s;

                build_stream(m, 0, 0, MUT_NONE, &buf, &size);
                for (int k = 0; k < 2; k++) {
                        size_t size2;

                        state_writer_init(&w);
                        assert_int_equal(state_reader_init(&r, buf, size), 0);
                        while (state_reader_next(&r, &s) > 0)
                                state_writer_add(&w, s.id, s.version, s.instance, s.data, s.size);
                        if (k == 0)
                                state_writer_add(&w, SEC_VCPU_REGS, 1, 2, regs, sizeof regs);
                        else
                                state_writer_add(&w, 99, 1, 0, regs, 8);
                        assert_int_equal(state_writer_finish(&w, &buf2, &size2), 0);
                        assert_int_equal(vm_state_parse(&m->vm, buf2, size2, sec, err, sizeof err), -EBADMSG);
                        assert_non_null(strstr(err, k == 0 ? "section 16 for instance 2: no such device"
                                                           : "unknown section 99"));
                        free(buf2);
                        buf2 = NULL;
                }
                m->vm.mem.size = 128 << 20;
                assert_int_equal(vm_state_parse(&m->vm, buf, size, sec, err, sizeof err), -EBADMSG);
                assert_non_null(strstr(err, "67108864 bytes, this VM has 2 and 134217728"));
        }
        machine_free(m);
        (void)state;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_uart_contract),
                cmocka_unit_test(test_pm_contract),
                cmocka_unit_test(test_parse),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
