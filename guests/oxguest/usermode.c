#include "usermode.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "console.h"
#include "idt.h"
#include "io.h"
#include "layout.h"
#include "power.h"
#include "scenarios.h"
#include "string.h"

#define EXCEPTION_VECTORS 32
#define EXCEPTION_STUB_SIZE 16
#define VECTOR_UD 6
#define UD2_LEN 2
#define MAPPED_LIMIT 0x100000000ULL
/* Available 64-bit TSS, present, DPL 0 (SDM vol. 3, 8.2.3). */
#define TSS_AVAILABLE64 0x89

/* 64-bit TSS (SDM vol. 3, figure 8-11). No I/O bitmap: CPL3 code does no port I/O. */
struct __attribute__((packed)) tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
};

/* The stack exception_common (usermode.S) builds, lowest address first. */
struct trap_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

/* What usermode_run saves and usermode_return restores (offsets fixed in usermode.S). */
struct kernel_context {
	uint64_t rbx, rbp, r12, r13, r14, r15, rsp;
};

/* boot.S and usermode.S */
extern uint64_t gdt[];
extern const uint8_t exception_stubs[];
extern uint8_t user_stack[], kernel_stack[];
_Noreturn void iret_to_user(uint64_t rip, uint64_t rsp);
/* Saves the CPL0 context in ctx and runs fn(arg) at CPL3 on user_rsp; returns SYS_EXIT's value. */
uint64_t usermode_run(uint64_t (*fn)(void *), void *arg, uint64_t user_rsp,
		      struct kernel_context *ctx);
/* Resumes the context usermode_run saved, making it return value. */
_Noreturn void usermode_return(const struct kernel_context *ctx, uint64_t value);

/* Called from usermode.S only. */
void exception_dispatch(struct trap_frame *frame);

static struct tss64 tss __attribute__((aligned(16)));
static struct idt_gate idt[EXCEPTION_VECTORS] __attribute__((aligned(16)));
static const char *owner = "usermode";
/* The usermode_call() in progress (NULL: none); SYS_EXIT returns to it. */
static struct kernel_context *active_call;

static const char *const exception_names[EXCEPTION_VECTORS] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "vector 9", "#TS",
	"#NP", "#SS", "#GP", "#PF", "vector 15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

static _Noreturn void exception_report(const struct trap_frame *frame)
{
	const char *name = frame->vector < EXCEPTION_VECTORS ? exception_names[frame->vector] : NULL;
	char why[160];
	ksnprintf(why, sizeof(why),
		  "exception %llu (%s) error=0x%llx rip=0x%llx cs=0x%llx rsp=0x%llx cr2=0x%llx",
		  (unsigned long long)frame->vector, name != NULL ? name : "reserved",
		  (unsigned long long)frame->error, (unsigned long long)frame->rip,
		  (unsigned long long)frame->cs, (unsigned long long)frame->rsp,
		  (unsigned long long)read_cr2());
	/* A fault in the middle of a system call may have left a line half-written. */
	console_end_line();
	scenario_fail(owner, why);
	power_off_or_halt();
}

static uint64_t sys_write(uint64_t buf, uint64_t len)
{
	/* The caller is this image's own CPL3 code, but a wild pointer must not take CPL0 along. */
	if (len > SYS_WRITE_MAX || buf >= MAPPED_LIMIT - SYS_WRITE_MAX)
		return (uint64_t)-1;
	const char *text = (const char *)(uintptr_t)buf;
	for (uint64_t i = 0; i < len; i++)
		console_putc(text[i]);
	return len;
}

static uint64_t sys_exit(uint64_t result)
{
	struct kernel_context *ctx = active_call;
	if (ctx == NULL)
		return (uint64_t)-1;
	active_call = NULL;
	usermode_return(ctx, result);
}

static uint64_t syscall_dispatch(uint64_t number, uint64_t arg0, uint64_t arg1)
{
	switch (number) {
	case SYS_WRITE:
		return sys_write(arg0, arg1);
	case SYS_EXIT:
		return sys_exit(arg0);
	default:
		return (uint64_t)-1;
	}
}

static bool is_user_syscall(const struct trap_frame *frame)
{
	if (frame->vector != VECTOR_UD || (frame->cs & SELECTOR_RPL3) != SELECTOR_RPL3 ||
	    frame->rip >= MAPPED_LIMIT - UD2_LEN)
		return false;
	const uint8_t *code = (const uint8_t *)(uintptr_t)frame->rip;
	return code[0] == 0x0F && code[1] == 0x0B;
}

void exception_dispatch(struct trap_frame *frame)
{
	if (!is_user_syscall(frame))
		exception_report(frame);
	frame->rax = syscall_dispatch(frame->rax, frame->rdi, frame->rsi);
	frame->rip += UD2_LEN;
}

void user_printf(const char *fmt, ...)
{
	char text[SYS_WRITE_MAX + 1];
	va_list args;
	va_start(args, fmt);
	int len = kvsnprintf(text, sizeof(text), fmt, args);
	va_end(args);
	uint64_t number = SYS_WRITE;
	__asm__ volatile("ud2" : "+a"(number) : "D"(text), "S"((uint64_t)len) : "memory");
}

static void load_tss(void)
{
	uint64_t base = (uintptr_t)&tss;
	uint64_t limit = sizeof(tss) - 1;
	memset(&tss, 0, sizeof(tss));
	tss.rsp[0] = (uintptr_t)(kernel_stack + KERNEL_STACK_SIZE);
	tss.iomap_base = sizeof(tss);
	/* Written every time, so the descriptor is "available" again for ltr (ltr marks it busy). */
	gdt[GDT_TSS / 8] = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) |
			   ((uint64_t)TSS_AVAILABLE64 << 40) | (((limit >> 16) & 0xF) << 48) |
			   (((base >> 24) & 0xFF) << 56);
	gdt[GDT_TSS / 8 + 1] = base >> 32;
	__asm__ volatile("ltr %w0" : : "r"((uint16_t)GDT_TSS) : "memory");
}

static void load_idt(void)
{
	for (int v = 0; v < EXCEPTION_VECTORS; v++) {
		/* DPL 0: only the CPU (exceptions) enters through these gates. */
		idt[v] = idt_interrupt_gate((uintptr_t)(exception_stubs + v * EXCEPTION_STUB_SIZE));
	}
	struct descriptor_table_register idtr = {sizeof(idt) - 1, (uintptr_t)idt};
	__asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

_Noreturn void usermode_enter(const char *name, void (*entry)(void))
{
	owner = name;
	load_tss();
	load_idt();
	/* Entered by iretq, not call: leave room for the return address the ABI expects. */
	iret_to_user((uintptr_t)entry, (uintptr_t)(user_stack + USER_STACK_SIZE - 8));
}

uint64_t usermode_call(const char *name, uint64_t (*fn)(void *arg), void *arg)
{
	struct kernel_context ctx;
	struct descriptor_table_register saved_idtr;
	__asm__ volatile("sidt %0" : "=m"(saved_idtr));
	owner = name;
	load_tss();
	load_idt();
	active_call = &ctx;
	/* The trampoline calls fn with the stack 16-byte aligned, as the ABI wants. */
	uint64_t result = usermode_run(fn, arg, (uintptr_t)(user_stack + USER_STACK_SIZE), &ctx);
	__asm__ volatile("lidt %0" : : "m"(saved_idtr) : "memory");
	return result;
}
