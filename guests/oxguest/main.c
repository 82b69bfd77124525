/*
 * oxguest: the bundled test and demo guest of oxvirt. Boots through PVH or the Linux 64-bit
 * protocol (boot.S, bootinfo.c), reads the platform from ACPI (acpi.c), runs the scenarios
 * named on the command line (scenarios.c), prints "oxguest: done" and powers off.
 */
#include "main.h"

#include "acpi.h"
#include "console.h"
#include "power.h"
#include "scenarios.h"

_Noreturn void main(const struct boot_info *info)
{
	kprintf("oxguest: boot protocol=%s rsdp=0x%llx (%s) e820_entries=%u%s\n", info->protocol,
		(unsigned long long)info->rsdp, info->rsdp_source, info->e820_count,
		info->e820_truncated ? " (truncated)" : "");
	if (info->cmdline_truncated)
		kprintf("oxguest: command line truncated to %u bytes\n", CMDLINE_MAX - 1);
	acpi_init(info->rsdp);
	scenarios_run(info);
	kprintf("oxguest: done\n");
	power_off_or_halt();
}
