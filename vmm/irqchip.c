/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The in-kernel interrupt controllers' state: the two 8259 PICs and the IOAPIC (machine
 * sections) and each vCPU's local APIC. KVM emulates them; we save and load them. */
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vm-internal.h"

static int irqchip_save(Vm *vm, uint32_t chip_id, void *buf) {
        struct kvm_irqchip c = { .chip_id = chip_id };

        if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &c) < 0)
                return negative_errno();
        memcpy(buf, &c, sizeof c);
        return 0;
}

static int irqchip_check(uint32_t chip_id, const void *data) {
        struct kvm_irqchip c;

        memcpy(&c, data, sizeof c);
        return c.chip_id == chip_id ? 0 : -EBADMSG;
}

static int irqchip_load(Vm *vm, const void *data) {
        struct kvm_irqchip c;

        memcpy(&c, data, sizeof c);
        if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &c) < 0)
                return log_debug_errno(errno, "state: KVM_SET_IRQCHIP %u failed: %m", c.chip_id);
        return 0;
}

#define DEFINE_IRQCHIP(ident, chip)                                                                \
        static int ident##_save(void *o, void *buf, size_t size) {                                 \
                (void)size;                                                                        \
                return irqchip_save(o, chip, buf);                                                 \
        }                                                                                          \
        static int ident##_check(void *o, uint16_t version, const void *data, size_t size) {      \
                (void)o, (void)version, (void)size;                                                \
                return irqchip_check(chip, data);                                                  \
        }                                                                                          \
        static int ident##_load(void *o, uint16_t version, const void *data, size_t size) {       \
                (void)version, (void)size;                                                         \
                return irqchip_load(o, data);                                                      \
        }

DEFINE_IRQCHIP(pic_master, KVM_IRQCHIP_PIC_MASTER)
DEFINE_IRQCHIP(pic_slave, KVM_IRQCHIP_PIC_SLAVE)
DEFINE_IRQCHIP(ioapic, KVM_IRQCHIP_IOAPIC)

const DeviceOps pic_master_device_ops = {
        .name = "pic-master",
        .section = SEC_PIC_MASTER,
        .version = 1,
        .min_version = 1,
        .phase = DEVICE_LOAD_EARLY,
        .size = sizeof(struct kvm_irqchip),
        .save = pic_master_save,
        .check = pic_master_check,
        .load = pic_master_load,
};

const DeviceOps pic_slave_device_ops = {
        .name = "pic-slave",
        .section = SEC_PIC_SLAVE,
        .version = 1,
        .min_version = 1,
        .phase = DEVICE_LOAD_EARLY,
        .size = sizeof(struct kvm_irqchip),
        .save = pic_slave_save,
        .check = pic_slave_check,
        .load = pic_slave_load,
};

const DeviceOps ioapic_device_ops = {
        .name = "ioapic",
        .section = SEC_IOAPIC,
        .version = 1,
        .min_version = 1,
        .phase = DEVICE_LOAD_EARLY,
        .size = sizeof(struct kvm_irqchip),
        .save = ioapic_save,
        .check = ioapic_check,
        .load = ioapic_load,
};

/* --- local APIC, one per vCPU --- */

static int lapic_save(void *o, void *buf, size_t size) {
        Vcpu *v = o;

        (void)size;
        if (ioctl(v->fd, KVM_GET_LAPIC, buf) < 0)
                return negative_errno();
        return 0;
}

static int lapic_load(void *o, uint16_t version, const void *data, size_t size) {
        struct kvm_lapic_state l;
        Vcpu *v = o;

        (void)version, (void)size;
        memcpy(&l, data, sizeof l);
        if (ioctl(v->fd, KVM_SET_LAPIC, &l) < 0)
                return log_debug_errno(errno, "state: KVM_SET_LAPIC failed: %m");
        return 0;
}

/* Loaded after the sregs (which set the APIC base) and before the MSRs (the TSC
 * deadline needs the LAPIC's timer mode). */
const DeviceOps lapic_device_ops = {
        .name = "lapic",
        .section = SEC_VCPU_LAPIC,
        .version = 1,
        .min_version = 1,
        .per_vcpu = true,
        .phase = DEVICE_LOAD_VCPU,
        .rank = 4,
        .size = sizeof(struct kvm_lapic_state),
        .save = lapic_save,
        .load = lapic_load,
};
