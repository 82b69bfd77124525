/* Power off and the three reset methods. */
#ifndef OXGUEST_POWER_H
#define OXGUEST_POWER_H

#include <stdbool.h>
#include <stdint.h>

enum reset_method {
	RESET_I8042 = 1,
	RESET_ACPI = 2,
	RESET_TRIPLE_FAULT = 3,
};

/* "i8042", "acpi" or "triple-fault"; NULL for an unknown value. */
const char *reset_method_name(int method);

/*
 * Requests S5 through PM1a_CNT (and PM1b_CNT if present): SLP_TYP 0 | SLP_EN as a 16-bit write.
 * Returns only if the machine is still running about a second later.
 */
void acpi_power_off(void);

/* PWRBTN_STS in PM1_STS and PWRBTN_EN in PM1_EN (ACPI 6.5, 4.8.3.1). */
#define PM1_PWRBTN (1u << 8)

/* PM1_STS / PM1_EN of the PM1a event block (platform()->pm1a_evt). */
uint16_t pm1_status(void);
/* Writes 1s to clear the given PM1_STS bits. */
void pm1_status_clear(uint16_t bits);
uint16_t pm1_enable(void);
void pm1_set_enable(uint16_t bits);

/* Prints "oxguest: poweroff failed" after a failed power-off and halts. */
_Noreturn void power_off_or_halt(void);

/*
 * Triggers a reset. Returns false at once when the method is unavailable (no ACPI reset
 * register), true after waiting about a second when the reset did not happen.
 */
bool reset_machine(enum reset_method method);

#endif
