/*
 * oxguest entry points.
 *
 *  - pvh_start: PVH boot (XEN_ELFNOTE_PHYS32_ENTRY). 32-bit protected mode, paging off,
 *    EBX = hvm_start_info. Builds the identity map, enables PAE + long mode.
 *  - linux64_start (e_entry): Linux 64-bit boot protocol. Long mode with the loader's identity
 *    map, RSI = boot_params. Switches to this image's own page tables and GDT.
 *
 * Both print an early line on COM1 first (a benchmark measures time to first byte), then zero
 * .bss, switch to the BSP stack and call entry_pvh()/entry_linux64() in C with the boot
 * structure's address.
 *
 * The macros below are written so that the same text assembles in .code32 and .code64 (32-bit
 * registers; in 64-bit mode the assembler adds an address-size prefix where needed).
 */
#include "layout.h"

/* Writes the NUL-terminated string at \msg to COM1, one `out` per byte. Clobbers eax, edx, edi. */
.macro EARLY_PUTS msg
	mov $\msg, %edi
	mov $COM1_PORT, %edx
1:	movb (%edi), %al
	test %al, %al
	jz 2f
	outb %al, %dx
	inc %edi
	jmp 1b
2:
.endm

/*
 * Fills the four page directories with 2 MiB identity mappings of 0-4 GiB. The last GiB
 * (MMIO hole: local APIC, IOAPIC, PCI) is mapped uncached. Every entry of every level is
 * user-accessible (U/S): the counter scenario's CPL3 code runs from the image and writes
 * anywhere in RAM, and this is a test guest (CR4.SMEP/SMAP stay off, so CPL0 is unaffected).
 * Clobbers eax, ecx, edx, edi.
 */
.macro BUILD_PAGE_DIRECTORIES
	mov $page_directories, %edi
	mov $(PDE_LARGE | PDE_USER | PDE_WRITE | PDE_PRESENT), %eax
	xor %edx, %edx
	mov $(3 * 512), %ecx
1:	mov %eax, (%edi)
	mov %edx, 4(%edi)
	add $0x200000, %eax
	add $8, %edi
	loop 1b
	or $(PDE_PCD | PDE_PWT), %eax
	mov $512, %ecx
2:	mov %eax, (%edi)
	mov %edx, 4(%edi)
	add $0x200000, %eax
	add $8, %edi
	loop 2b
.endm

/* Zeroes .bss (C globals), then switches to the BSP stack. Clobbers rax, rcx, rdi. */
.macro ZERO_BSS_AND_SWITCH_STACK
	mov $__bss_start, %edi
	mov $__bss_end, %ecx
	sub %edi, %ecx
	shr $3, %ecx
	xor %eax, %eax
	rep stosq
	mov $(bsp_stack + BSP_STACK_SIZE), %esp
.endm

	.section .text.boot, "ax"

	.code32
	.globl pvh_start
	.type pvh_start, @function
pvh_start:
	cli
	cld
	EARLY_PUTS msg_started_pvh
	BUILD_PAGE_DIRECTORIES
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	lgdt gdt_ptr
	mov %cr0, %eax
	or $(CR0_PG | CR0_PE), %eax
	mov %eax, %cr0
	ljmp $GDT_CODE64, $pvh_long_mode

	.code64
pvh_long_mode:
	mov $GDT_DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	mov %ebx, %r12d			/* hvm_start_info (zero-extended) */
	ZERO_BSS_AND_SWITCH_STACK
	mov %r12, %rdi
	call entry_pvh
	jmp halt_forever
	.size pvh_start, . - pvh_start

	.globl linux64_start
	.type linux64_start, @function
linux64_start:
	cli
	cld
	mov %rsi, %r12			/* boot_params */
	EARLY_PUTS msg_started_linux64
	BUILD_PAGE_DIRECTORIES
	mov $pml4, %eax
	mov %rax, %cr3
	lgdt gdt_ptr
	mov $(bsp_stack + BSP_STACK_SIZE), %esp
	pushq $GDT_CODE64
	pushq $linux64_reloaded
	lretq
linux64_reloaded:
	mov $GDT_DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	ZERO_BSS_AND_SWITCH_STACK
	mov %r12, %rdi
	call entry_linux64
	jmp halt_forever
	.size linux64_start, . - linux64_start

	.globl halt_forever
	.type halt_forever, @function
halt_forever:
	cli
	hlt
	jmp halt_forever
	.size halt_forever, . - halt_forever

	.section .rodata
msg_started_pvh:
	.asciz "oxguest: started (pvh)\n"
msg_started_linux64:
	.asciz "oxguest: started (linux64)\n"

/*
 * PVH entry note. The descriptor is 8 bytes like Linux's (QEMU reads a pointer-sized value);
 * loaders use its low 32 bits. 4-byte alignment: loaders align the name with the segment's
 * p_align (QEMU) or a fixed 4 (linux-loader), so the PT_NOTE segment must have p_align = 4.
 */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4				/* namesz: "Xen\0" */
	.long 8				/* descsz */
	.long 18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad pvh_start

	.section .data
	/* Accessed bits preset so that loading a selector never writes the GDT. */
	.balign 16
	.globl gdt
gdt:
	.quad 0
	.quad 0x00AF9B000000FFFF	/* GDT_CODE64: 64-bit code */
	.quad 0x00CF93000000FFFF	/* GDT_DATA: flat data */
	.quad 0x00CF9B000000FFFF	/* GDT_CODE32: flat 32-bit code (AP trampoline) */
	.quad 0x00CFF3000000FFFF	/* GDT_USER_DATA: flat data, DPL 3 */
	.quad 0x00AFFB000000FFFF	/* GDT_USER_CODE64: 64-bit code, DPL 3 */
	.quad 0, 0			/* GDT_TSS: 64-bit TSS descriptor, written by usermode.c */
gdt_end:
	.balign 8
	.globl gdt_ptr
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

	/*
	 * PML4 and PDPT are link-time constants: the loader writes them with the image, so no
	 * instructions are spent building them. The page directories are filled at entry.
	 */
	.balign 4096
	.globl pml4
pml4:
	.quad pdpt + (PDE_USER | PDE_WRITE | PDE_PRESENT)
	.fill 511, 8, 0
pdpt:
	.quad page_directories + 0x0000 + (PDE_USER | PDE_WRITE | PDE_PRESENT)
	.quad page_directories + 0x1000 + (PDE_USER | PDE_WRITE | PDE_PRESENT)
	.quad page_directories + 0x2000 + (PDE_USER | PDE_WRITE | PDE_PRESENT)
	.quad page_directories + 0x3000 + (PDE_USER | PDE_WRITE | PDE_PRESENT)
	.fill 508, 8, 0

	/* Not zeroed at entry: every byte is written before use. */
	.section .pagetables, "aw", @nobits
	.balign 4096
	.globl page_directories		/* pci.c marks a low ECAM window uncached */
page_directories:
	.skip 4 * 4096

	.section .stacks, "aw", @nobits
	.balign 16
	.globl bsp_stack
bsp_stack:
	.skip BSP_STACK_SIZE

	.section .note.GNU-stack, "", @progbits
