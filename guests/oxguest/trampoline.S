/*
 * Application processor start-up.
 *
 * trampoline_start..trampoline_end is copied by smp.c to TRAMPOLINE_ADDR (a page below 1 MiB)
 * and runs there in real mode after the SIPI (CS = TRAMPOLINE_VECTOR << 8, IP = 0). It loads the
 * image's GDT and enters 32-bit protected mode at ap_entry32, which enables PAE + long mode with
 * the CR3 the BSP stored in the trampoline page and continues at ap_entry64 on the stack the BSP
 * stored there, calling ap_main() in C.
 *
 * The BSP starts one AP at a time, so one stack slot in the trampoline page is enough. A zero
 * stack means "start-up was abandoned": the AP halts without touching memory.
 */
#include "layout.h"

#define TRAMP_PHYS(label) (TRAMPOLINE_ADDR + ((label) - trampoline_start))

	.section .rodata.trampoline, "a"
	.code16
	.globl trampoline_start
trampoline_start:
	cli
	cld
	mov %cs, %ax
	mov %ax, %ds
	lgdtl trampoline_gdt_ptr - trampoline_start
	mov %cr0, %eax
	or $CR0_PE, %eax
	mov %eax, %cr0
	ljmpl $GDT_CODE32, $ap_entry32

	.balign 8
trampoline_gdt_ptr:
	.word 4 * 8 - 1			/* the first four descriptors of gdt (boot.S): all an AP uses */
	.long gdt
	.balign 8
	.globl trampoline_cr3
trampoline_cr3:
	.quad 0
	.globl trampoline_stack
trampoline_stack:
	.quad 0
	.globl trampoline_end
trampoline_end:

	.text
	.code32
ap_entry32:
	mov $GDT_DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov TRAMP_PHYS(trampoline_cr3), %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	or $CR0_PG, %eax
	mov %eax, %cr0
	ljmp $GDT_CODE64, $ap_entry64

	.code64
ap_entry64:
	mov $GDT_DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	mov TRAMP_PHYS(trampoline_stack), %rsp
	test %rsp, %rsp
	jz halt_forever
	call ap_main
	jmp halt_forever

	/* One stack per possible AP, indexed by its start-up slot (smp.c). */
	.section .stacks, "aw", @nobits
	.balign 16
	.globl ap_stacks
ap_stacks:
	.skip MAX_CPUS * AP_STACK_SIZE

	.section .note.GNU-stack, "", @progbits
