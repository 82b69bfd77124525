/*
 * Scenarios named on the command line: every whitespace-separated word that names a scenario
 * runs, in order; words containing '=' are ignored; other words report
 * "TEST <word> FAIL unknown scenario". With no scenario words at all, "demo" runs.
 */
#ifndef OXGUEST_SCENARIOS_H
#define OXGUEST_SCENARIOS_H

#include <stdint.h>

#include "bootinfo.h"

struct pci_device;

/* Returns when every scenario ran; does not return after poweroff, crash or demo. */
void scenarios_run(const struct boot_info *info);

/* Print a scenario's result line: "TEST <name> PASS[ <details>]" / "TEST <name> FAIL <reason>". */
void scenario_pass(const char *name, const char *details);
void scenario_fail(const char *name, const char *reason);

/* The first virtio device of type `virtio_id` (virtio_find over a scan with `pci_flags`); NULL
 * after printing "TEST <name> FAIL no <what> device". */
const struct pci_device *scenario_virtio_device(const char *name, unsigned pci_flags,
						uint16_t virtio_id, const char *what);

#endif
