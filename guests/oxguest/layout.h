/*
 * Constants shared by the assembly entry code and the C code of oxguest.
 * Only plain #defines: this header is included from .S files too.
 */
#ifndef OXGUEST_LAYOUT_H
#define OXGUEST_LAYOUT_H

/* Physical address the ELF is linked and loaded at (see linker.ld). */
#define LOAD_ADDR 0x100000

/*
 * GDT selectors (gdt in boot.S). The AP trampoline loads only the first four descriptors; the
 * user-mode ones and the TSS (16 bytes, filled in by usermode.c) follow them.
 */
#define GDT_CODE64 0x08
#define GDT_DATA 0x10
#define GDT_CODE32 0x18
#define GDT_USER_DATA 0x20
#define GDT_USER_CODE64 0x28
#define GDT_TSS 0x30
#define SELECTOR_RPL3 3

/* Control register and MSR bits used while switching modes. */
#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xC0000080
#define EFER_LME 0x00000100

/* Page directory entry flags for 2 MiB pages. */
#define PDE_PRESENT 0x001
#define PDE_WRITE 0x002
#define PDE_USER 0x004
#define PDE_PWT 0x008
#define PDE_PCD 0x010
#define PDE_LARGE 0x080

/* Stacks. The BSP stack is used by all C code on the boot CPU. */
#define BSP_STACK_SIZE 16384
#define AP_STACK_SIZE 4096
/*
 * Stacks of the CPL3 code (usermode.c) and of the CPL0 code it enters (system calls,
 * exceptions: the TSS's RSP0).
 */
#define USER_STACK_SIZE 8192
#define KERNEL_STACK_SIZE 4096
/* Upper bound on CPUs (BSP included) the guest can bring up. */
#define MAX_CPUS 64

/*
 * The real-mode AP trampoline is copied to this page below 1 MiB; the SIPI vector is its page
 * number. It must not overlap anything still in use when APs start (the boot information is
 * copied out of low memory at entry, before any scenario runs).
 */
#define TRAMPOLINE_ADDR 0x1000
#define TRAMPOLINE_VECTOR (TRAMPOLINE_ADDR >> 12)

/* COM1, used by the early boot message before any C code runs. */
#define COM1_PORT 0x3F8

#endif
