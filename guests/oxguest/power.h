/* Power off and the three reset methods. */
#ifndef OXGUEST_POWER_H
#define OXGUEST_POWER_H

#include <stdbool.h>

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

/* Prints "oxguest: poweroff failed" after a failed power-off and halts. */
_Noreturn void power_off_or_halt(void);

/*
 * Triggers a reset. Returns false at once when the method is unavailable (no ACPI reset
 * register), true after waiting about a second when the reset did not happen.
 */
bool reset_machine(enum reset_method method);

#endif
