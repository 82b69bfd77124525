/*
 * Ring 3 for the guest's hot loops: KVM may run CPL0 code through its instruction emulator
 * (~1 us an instruction on nested hosts), while CPL3 code runs natively everywhere.
 *
 * usermode_enter() loads a TSS (RSP0 = a dedicated kernel stack) and an IDT for the 32
 * exception vectors, then iretq's to entry at CPL3 (GDT_USER_CODE64/GDT_USER_DATA, RPL 3)
 * with IF = 0 (no interrupt ever reaches it) and IOPL 0. All pages are user-accessible
 * (boot.S): CPL3 code may call any function of the image that uses no privileged instruction
 * and no port I/O (ksnprintf, memset; not kprintf).
 *
 * System calls are `ud2` at CPL3 (rax = number, rdi and rsi = arguments, result in rax, every
 * other register preserved): the #UD handler serves them and resumes after the ud2. The
 * usual ways do not work on every KVM host: kvm_pvm (the development machines) raises #GP
 * for in/out at CPL3 even with IOPL 3, #UD for `int $n`, and runs a `syscall`'s target at
 * CPL3; exceptions from CPL3 are delivered correctly. Any other exception, or a #UD at CPL0,
 * prints "TEST <owner> FAIL exception <n> (<name>) ..." and powers off.
 *
 * usermode_call() runs a function at CPL3 and comes back: the function's return is the
 * system call SYS_EXIT, which resumes the CPL0 caller on its own stack (like longjmp) with
 * the function's result. The IDT the caller had is put back; the TSS stays loaded.
 *
 * Only the bootstrap processor enters user mode; APs keep the boot GDT's first four entries.
 * This header is included from usermode.S too.
 */
#ifndef OXGUEST_USERMODE_H
#define OXGUEST_USERMODE_H

/* rdi = buffer, rsi = length (at most SYS_WRITE_MAX): writes it to the console; rax = bytes. */
#define SYS_WRITE 1
#define SYS_WRITE_MAX 256
/* rdi = result: ends the innermost usermode_call(), which returns rdi. -1 outside one. */
#define SYS_EXIT 2

#ifndef __ASSEMBLER__
#include <stdint.h>

/* entry must never return (there is nothing to return to at CPL3). */
_Noreturn void usermode_enter(const char *owner, void (*entry)(void));

/*
 * Runs fn(arg) at CPL3 on the user stack and returns its result, back at CPL0. owner names
 * the scenario in the FAIL line of an exception at CPL3 (which powers off). fn may use what
 * CPL3 code may use (see above), memory included; it must not call usermode_*() itself.
 */
uint64_t usermode_call(const char *owner, uint64_t (*fn)(void *arg), void *arg);

/* For CPL3 code: formats like kprintf (up to SYS_WRITE_MAX bytes) and writes with SYS_WRITE. */
__attribute__((format(printf, 1, 2))) void user_printf(const char *fmt, ...);

#endif /* __ASSEMBLER__ */

#endif
