/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The board: which devices the machine has, at which ports, wired to which IRQ lines,
 * and the table of their state contracts. The UART is COM1 (IRQ 4), the ACPI PM device
 * raises the SCI on IRQ 9; both lines go to the in-kernel PIC and IOAPIC. */
#include <sys/ioctl.h>

#include "vm-internal.h"

void vm_set_irq_line(Vm *vm, unsigned irq, int level) {
        struct kvm_irq_level l = { .irq = irq, .level = level > 0 };

        if (vm->vm_fd >= 0)
                (void)ioctl(vm->vm_fd, KVM_IRQ_LINE, &l);
}

static void uart_set_irq(void *opaque, int level) {
        vm_set_irq_line(opaque, UART_COM1_IRQ, level);
}

static void pm_set_irq(void *opaque, int level) {
        vm_set_irq_line(opaque, PM_SCI_IRQ, level);
}

static void pm_event(void *opaque, PmEvent e) {
        Vm *vm = opaque;

        vm_post_event(vm, e == PM_EVENT_POWEROFF ? VM_EVENT_POWEROFF : VM_EVENT_RESET, NULL);
}

void board_init(Vm *vm) {
        uart_init(&vm->uart, uart_set_irq, vm_console_output, vm);
        vm->uart.rx_space = vm_console_rx_space;
        pm_init(&vm->pm, pm_set_irq, pm_event, vm);
}

void board_done(Vm *vm) {
        uart_done(&vm->uart);
        pm_done(&vm->pm);
}

static const DeviceOps *const machine_devices[] = {
        &clock_device_ops, &pic_master_device_ops, &pic_slave_device_ops, &ioapic_device_ops,
        &pit_device_ops,   &uart_device_ops,       &pm_device_ops,
};

static const DeviceOps *const vcpu_devices[] = {
        &regs_device_ops,      &sregs_device_ops, &xsave_device_ops,  &xcrs_device_ops,
        &debugregs_device_ops, &lapic_device_ops, &msrs_device_ops,   &events_device_ops,
        &mp_state_device_ops,
};

static void *machine_opaque(Vm *vm, const DeviceOps *o) {
        if (o == &uart_device_ops)
                return &vm->uart;
        if (o == &pm_device_ops)
                return &vm->pm;
        return vm;
}

int board_init_devices(Vm *vm) {
        size_t n = ELEMENTSOF(machine_devices) + (size_t)vm->n_vcpus * ELEMENTSOF(vcpu_devices);
        Device *d;

        board_free_devices(vm);
        d = calloc(n, sizeof *d);
        if (!d)
                return -ENOMEM;
        vm->devices = d;
        for (size_t i = 0; i < ELEMENTSOF(machine_devices); i++)
                *d++ = (Device){ machine_devices[i], machine_opaque(vm, machine_devices[i]), 0 };
        for (unsigned c = 0; c < vm->n_vcpus; c++)
                for (size_t i = 0; i < ELEMENTSOF(vcpu_devices); i++)
                        *d++ = (Device){ vcpu_devices[i], &vm->vcpus[c], (uint16_t)c };
        vm->n_devices = (unsigned)n;
        return 0;
}

void board_free_devices(Vm *vm) {
        free(vm->devices);
        vm->devices = NULL;
        vm->n_devices = 0;
}

int board_register_pio(Vm *vm) {
        int r;

        r = pio_bus_register(&vm->pio, UART_COM1_BASE, 8, &uart_pio_ops, &vm->uart);
        if (r >= 0)
                r = pio_bus_register(&vm->pio, PM_BASE, PM_LEN, &pm_pio_ops, &vm->pm);
        if (r >= 0)
                r = pio_bus_register(&vm->pio, PM_RESET_PORT, 1, &pm_reset_pio_ops, &vm->pm);
        return r;
}

void board_reset_devices(Vm *vm) {
        for (unsigned i = 0; i < vm->n_devices; i++)
                device_reset(&vm->devices[i]);
}
