/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "memory.h"

/* ACPI tables for a stock Linux guest: RSDP, XSDT, FADT (the PM1a event and control
 * blocks of pm.h, the reset register, SCI on PM_SCI_IRQ, not hardware-reduced), FACS,
 * a DSDT holding only \_S5 (SLP_TYP 0, what pm.c takes as soft off), and a MADT with one
 * LAPIC per vCPU (APIC id = vCPU index), KVM's IOAPIC and the interrupt source overrides
 * of KVM's default routing. Layout and contents: docs/guests.md. */

#define ACPI_TABLES_ADDR 0xf0000 /* the RSDP; inside the e820 reserved range 0xf0000-0xfffff */
#define ACPI_TABLES_MAX 0x10000
#define ACPI_IOAPIC_ADDR 0xfec00000
#define ACPI_LAPIC_ADDR 0xfee00000
#define ACPI_MAX_VCPUS 255 /* xAPIC ids; 0xff is the broadcast id */

/* Builds the tables as they will lie at guest-physical 'base' (16-byte aligned) into
 * buf. Returns the number of bytes used (the RSDP is at offset 0), -EINVAL for a bad
 * vCPU count or base, -ENOBUFS when buf is too small. */
int acpi_build(unsigned n_vcpus, uint64_t base, uint8_t *buf, size_t size);

/* Writes the tables to ACPI_TABLES_ADDR in guest RAM; *ret_rsdp gets the RSDP address. */
int acpi_write(const GuestMemory *m, unsigned n_vcpus, uint64_t *ret_rsdp);
