/*
 * The assembly half of usermode.c: the iretq into CPL3 and the exception entry stubs, which
 * also carry the system calls (ud2 at CPL3, see usermode.h).
 */
#include "layout.h"
#include "usermode.h"

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
 * uint64_t usermode_run(fn (rdi), arg (rsi), user_rsp (rdx), struct kernel_context *ctx (rcx)):
 * saves the callee-saved registers and the stack pointer (at the return address) in ctx, then
 * enters user_call_trampoline at CPL3 with r12 = fn and rdi = arg. It "returns" when
 * usermode_return() restores ctx.
 */
	.globl usermode_run
	.type usermode_run, @function
usermode_run:
	mov %rbx, 0(%rcx)
	mov %rbp, 8(%rcx)
	mov %r12, 16(%rcx)
	mov %r13, 24(%rcx)
	mov %r14, 32(%rcx)
	mov %r15, 40(%rcx)
	mov %rsp, 48(%rcx)
	mov %rdi, %r12
	mov %rsi, %rdi
	pushq $(GDT_USER_DATA | SELECTOR_RPL3)
	pushq %rdx
	pushq $USER_RFLAGS
	pushq $(GDT_USER_CODE64 | SELECTOR_RPL3)
	lea user_call_trampoline(%rip), %rax
	pushq %rax
	iretq
	.size usermode_run, . - usermode_run

/* At CPL3: calls fn(arg), then SYS_EXIT with its result. */
user_call_trampoline:
	call *%r12
	mov %rax, %rdi
	mov $SYS_EXIT, %eax
	ud2
	/* SYS_EXIT does not come back while a call is active. */
1:	jmp 1b

/*
 * _Noreturn void usermode_return(const struct kernel_context *ctx (rdi), uint64_t value (rsi)):
 * called at CPL0 from the SYS_EXIT handler on the kernel stack. Reloads the kernel data
 * selectors (the return to CPL3 nulled them), the saved registers and stack, and returns value
 * from usermode_run.
 */
	.globl usermode_return
	.type usermode_return, @function
usermode_return:
	mov $GDT_DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov 0(%rdi), %rbx
	mov 8(%rdi), %rbp
	mov 16(%rdi), %r12
	mov 24(%rdi), %r13
	mov 32(%rdi), %r14
	mov 40(%rdi), %r15
	mov 48(%rdi), %rsp
	mov %rsi, %rax
	ret
	.size usermode_return, . - usermode_return

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
