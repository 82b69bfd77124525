/*
 * The 64-bit IDT pieces (SDM vol. 3, 6.14.1) that usermode.c (exception vectors) and
 * virtio_msix.c (one interrupt vector) both build: a gate, the IDTR image lidt/sidt use, and
 * a present DPL 0 interrupt gate to a handler in the 64-bit code segment.
 */
#ifndef OXGUEST_IDT_H
#define OXGUEST_IDT_H

#include <stdint.h>

#include "layout.h"

/* 64-bit interrupt gate, present, DPL 0: software at CPL3 cannot `int` through it. */
#define GATE_INTERRUPT64 0x8E

struct __attribute__((packed)) idt_gate {
	uint16_t offset_low;
	uint16_t selector;
	uint8_t ist;
	uint8_t type_attr;
	uint16_t offset_mid;
	uint32_t offset_high;
	uint32_t reserved;
};

/* What lgdt/lidt read and sgdt/sidt write. */
struct __attribute__((packed)) descriptor_table_register {
	uint16_t limit;
	uint64_t base;
};

/* An interrupt gate (GATE_INTERRUPT64, no IST) to handler in GDT_CODE64. */
static inline struct idt_gate idt_interrupt_gate(uintptr_t handler)
{
	uint64_t offset = handler;
	return (struct idt_gate){
		.offset_low = (uint16_t)offset,
		.selector = GDT_CODE64,
		.ist = 0,
		.type_attr = GATE_INTERRUPT64,
		.offset_mid = (uint16_t)(offset >> 16),
		.offset_high = (uint32_t)(offset >> 32),
		.reserved = 0,
	};
}

#endif
