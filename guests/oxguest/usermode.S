/*
 * The assembly half of usermode.c: the iretq into CPL3 and the exception entry stubs, which
 * also carry the system calls (ud2 at CPL3, see usermode.h).
 */
#include "layout.h"

/*
 * RFLAGS at CPL3: IOPL 0, IF 0, reserved bit 1. IOPL 3 would not help: KVM hosts that run
 * guest user mode under their own ring 3 (kvm_pvm, on the development machines) raise #GP on
 * in/out at CPL3 whatever the IOPL.
 */
#define USER_RFLAGS 0x0002
/* Vectors for which the CPU pushes an error code (Intel SDM vol. 3, table 6-1). */
#define HAS_ERROR_CODE(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || (v) == 13 || \
			   (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

	.text
	.code64

/* _Noreturn void iret_to_user(uint64_t rip, uint64_t rsp): enters rip at CPL3 on stack rsp. */
	.globl iret_to_user
	.type iret_to_user, @function
iret_to_user:
	pushq $(GDT_USER_DATA | SELECTOR_RPL3)
	pushq %rsi
	pushq $USER_RFLAGS
	pushq $(GDT_USER_CODE64 | SELECTOR_RPL3)
	pushq %rdi
	iretq
	.size iret_to_user, . - iret_to_user

/*
 * One 16-byte stub per exception vector 0-31 (usermode.c computes the address of stub v as
 * exception_stubs + 16 * v). Each pushes the vector and, where the CPU pushed none, a zero
 * error code, so that exception_common always sees the same frame.
 */
.macro EXCEPTION_STUB vector
	.balign 16
	.if HAS_ERROR_CODE(\vector) == 0
	pushq $0
	.endif
	pushq $\vector
	jmp exception_common
.endm

	.balign 16
	.globl exception_stubs
exception_stubs:
	.irp v, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	EXCEPTION_STUB \v
	.endr
	.irp v, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	EXCEPTION_STUB \v
	.endr

/*
 * Saves every general register below the vector and error code (struct trap_frame in
 * usermode.c), calls exception_dispatch(frame) on an aligned stack and, when it returns (a
 * system call was served), resumes at the frame's RIP with the frame's registers.
 */
exception_common:
	cld
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, %rdi
	mov %rsp, %rbx			/* callee-saved: survives the call */
	and $-16, %rsp
	call exception_dispatch
	mov %rbx, %rsp
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rbp
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
	add $16, %rsp			/* vector and error code */
	iretq

	/* Not zeroed: nothing is read from a stack before it is written. */
	.section .stacks, "aw", @nobits
	.balign 16
	.globl user_stack
user_stack:
	.skip USER_STACK_SIZE
	.balign 16
	.globl kernel_stack
kernel_stack:
	.skip KERNEL_STACK_SIZE

	.section .note.GNU-stack, "", @progbits
