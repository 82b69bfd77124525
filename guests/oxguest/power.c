#include "power.h"

#include "acpi.h"
#include "console.h"
#include "io.h"
#include "timer.h"

#define PM1_SLP_EN (1u << 13)
#define PM1_SLP_TYP_S5 (0u << 10)
#define I8042_COMMAND 0x64
#define I8042_PULSE_RESET 0xFE
/* Resets and power-off may complete asynchronously in the VMM (QEMU): give them this long. */
#define SETTLE_US 1000000

const char *reset_method_name(int method)
{
	switch (method) {
	case RESET_I8042:
		return "i8042";
	case RESET_ACPI:
		return "acpi";
	case RESET_TRIPLE_FAULT:
		return "triple-fault";
	default:
		return NULL;
	}
}

void acpi_power_off(void)
{
	const struct platform *p = platform();
	if (p->pm1a_cnt == 0)
		return;
	outw(p->pm1a_cnt, PM1_SLP_TYP_S5 | PM1_SLP_EN);
	if (p->pm1b_cnt != 0)
		outw(p->pm1b_cnt, PM1_SLP_TYP_S5 | PM1_SLP_EN);
	delay_us(SETTLE_US);
}

static uint16_t pm1_enable_port(void)
{
	const struct platform *p = platform();
	return (uint16_t)(p->pm1a_evt + p->pm1_evt_len / 2);
}

uint16_t pm1_status(void)
{
	return inw(platform()->pm1a_evt);
}

void pm1_status_clear(uint16_t bits)
{
	outw(platform()->pm1a_evt, bits);
}

uint16_t pm1_enable(void)
{
	return inw(pm1_enable_port());
}

void pm1_set_enable(uint16_t bits)
{
	outw(pm1_enable_port(), bits);
}

_Noreturn void power_off_or_halt(void)
{
	acpi_power_off();
	kprintf("oxguest: poweroff failed\n");
	halt_forever();
}

static bool write_reset_register(void)
{
	const struct reset_register *r = &platform()->reset;
	if (!r->present)
		return false;
	if (r->space == GAS_SYSTEM_IO)
		outb((uint16_t)r->address, r->value);
	else
		mmio_write8((uintptr_t)r->address, r->value);
	return true;
}

/* An IDT that cannot hold any vector: the #UD becomes #DF, then a triple fault. */
_Noreturn static void triple_fault(void)
{
	static const struct __attribute__((packed)) {
		uint16_t limit;
		uint64_t base;
	} empty_idt = {0, 0};
	__asm__ volatile("lidt %0\n\tud2" : : "m"(empty_idt));
	__builtin_unreachable();
}

bool reset_machine(enum reset_method method)
{
	switch (method) {
	case RESET_I8042:
		outb(I8042_COMMAND, I8042_PULSE_RESET);
		break;
	case RESET_ACPI:
		if (!write_reset_register())
			return false;
		break;
	case RESET_TRIPLE_FAULT:
		triple_fault();
	}
	delay_us(SETTLE_US);
	return true;
}
