/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vmmd test guest: PVH entry, long-mode switch, descriptor tables and
 * interrupt stubs.
 *
 * Everything that can be computed at link time is (page tables for the first
 * GiB, the GDT), so the emulated ring-0 boot path is a few dozen instructions.
 */
#include "guest.h"

/* PVH: the loader finds the 32-bit entry point in this note. */
        .section .note.Xen, "a"
        .balign 4
        .long 4                 /* namesz: "Xen\0" */
        .long 8                 /* descsz: the entry, zero-extended to 64 bits */
        .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .balign 4
        .quad pvh_entry

/*
 * Entered in 32-bit protected mode, paging off, flat segments,
 * %ebx = physical address of struct hvm_start_info.
 */
        .section .text.entry, "ax"
        .code32
        .globl pvh_entry
pvh_entry:
        cli
        mov %ebx, %edi
        lgdt gdt_ptr
        mov %cr4, %eax
        or $0x20, %eax                  /* PAE */
        mov %eax, %cr4
        mov $pml4, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx           /* EFER */
        rdmsr
        or $0x100, %eax                 /* LME */
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax            /* PG | PE */
        mov %eax, %cr0
        ljmp $KERNEL_CS, $long_entry

        .code64
long_entry:
        mov $KERNEL_DS, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        mov $kstack_top, %rsp
        mov %edi, %edi                  /* upper half undefined after the switch */
        call kmain

        .text
/* enter_user(rip, rsp): drop to ring 3 with interrupts on. */
        .globl enter_user
enter_user:
        pushq $USER_DS
        pushq %rsi
        pushq $0x202
        pushq $USER_CS
        pushq %rdi
        iretq

/* Ring 0 does nothing but wait for the timer. */
        .globl idle_forever
idle_forever:
1:      sti
        hlt
        jmp 1b

/*
 * Exception stubs, 16 bytes apart: isr_stubs + 16 * vector.  Each pushes a
 * zero error code where the CPU pushes none, then the vector.
 */
        .balign 16
        .globl isr_stubs
isr_stubs:
        .set vec, 0
        .rept 32
        .balign 16
        .if !(vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30)
        pushq $0
        .endif
        pushq $vec
        jmp exc_common
        .set vec, vec + 1
        .endr

exc_common:
        mov (%rsp), %rdi                /* vector */
        mov 8(%rsp), %rsi               /* error code */
        mov 16(%rsp), %rdx              /* rip */
        and $-16, %rsp
        call exception

/*
 * IRQ0.  The CPU leaves %rsp 16-byte aligned minus 8 after its 5-word frame;
 * nine pushes make it aligned for the call.  A non-zero return from
 * timer_tick means "stop running ring 3, idle in ring 0 from now on".
 */
        .balign 16
        .globl irq0_stub
irq0_stub:
        push %rax
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        call timer_tick
        test %eax, %eax
        jnz 1f
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        iretq
1:      mov $kstack_top, %rsp
        jmp idle_forever

/* IRQ9, the ACPI SCI: only the power button raises it.  It does not return
 * when the button was pressed (the guest powers off). */
        .balign 16
        .globl irq9_stub
irq9_stub:
        push %rax
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        call sci_irq
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        iretq

/* The other IRQs are masked; this only catches spurious IRQ7/IRQ15 (no EOI). */
        .balign 16
        .globl irq_spurious
irq_spurious:
        iretq

        .data
        .balign 16
        .globl gdt
gdt:
        .quad 0
        .quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
        .quad 0x00cf92000000ffff        /* 0x10 kernel data */
        .quad 0x00cff2000000ffff        /* 0x18 user data, DPL 3 */
        .quad 0x00affa000000ffff        /* 0x20 user code, 64-bit, DPL 3 */
        .quad 0, 0                      /* 0x28 TSS, filled in by kernel.c */
gdt_end:
        .balign 8
        .word 0
gdt_ptr:
        .word gdt_end - gdt - 1
        .quad gdt

/*
 * Page tables: PML4 -> one PDPT (512 GiB) -> 2 MiB pages.  The first GiB is
 * mapped here at link time; kernel.c adds the rest of RAM.  All entries are
 * present, writable and user-accessible.
 */
        .section .data.pagetables, "aw"
        .balign 4096
        .globl pml4
pml4:
        .quad pdpt + 7
        .fill 511, 8, 0
        .globl pdpt
pdpt:
        .quad pd0 + 7
        .fill 511, 8, 0
pd0:
        .set i, 0
        .rept 512
        .quad (i << 21) | 0x87
        .set i, i + 1
        .endr

        .bss
        .balign 4096
        .globl kstack_top, ustack_top
        .skip 16384
kstack_top:
        .skip 16384
ustack_top:

        .section .note.GNU-stack, "", @progbits
