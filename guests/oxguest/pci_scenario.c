#include "pci_scenario.h"

#include <stddef.h>
#include <stdint.h>

#include "console.h"
#include "pci.h"
#include "scenarios.h"

/* "bb:dd.f vvvv:dddd," per function. */
#define DEVICE_ENTRY_LEN 18
#define DETAILS_MAX (16 + PCI_MAX_DEVICES * DEVICE_ENTRY_LEN)
#define LINE_MAX 400

static const char *bar_kind_name(const struct pci_bar *bar)
{
	switch (bar->kind) {
	case PCI_BAR_IO:
		return "io";
	case PCI_BAR_MEM32:
		return bar->prefetchable ? "mem32-pf" : "mem32";
	default:
		return bar->prefetchable ? "mem64-pf" : "mem64";
	}
}

/* Appends to line at *len; keeps the line NUL-terminated and truncated at size. */
__attribute__((format(printf, 4, 5))) static void append(char *line, int size, int *len,
							const char *fmt, ...)
{
	va_list args;
	if (*len >= size - 1)
		return;
	va_start(args, fmt);
	*len += kvsnprintf(line + *len, size - *len, fmt, args);
	va_end(args);
}

static void print_device(const struct pci_device *d)
{
	char line[LINE_MAX];
	char bdf[8];
	int len = 0;
	pci_format_bdf(d->bdf, bdf);
	append(line, sizeof(line), &len, "pci: %s %04x:%04x class=%02x%02x%02x rev=%02x hdr=%u",
	       bdf, d->vendor, d->device, d->class_code, d->subclass, d->prog_if, d->revision,
	       d->header_type);
	if (d->header_type == PCI_HEADER_TYPE_BRIDGE)
		append(line, sizeof(line), &len, " bus=%u", d->secondary_bus);
	for (int i = 0; i < PCI_BAR_COUNT; i++) {
		const struct pci_bar *bar = &d->bars[i];
		if (bar->kind != PCI_BAR_NONE)
			append(line, sizeof(line), &len, " bar%d=%s:0x%llx+0x%llx%s", i,
			       bar_kind_name(bar), (unsigned long long)bar->base,
			       (unsigned long long)bar->size, bar->placed ? ":placed" : "");
	}
	for (int i = 0; i < d->cap_count; i++)
		append(line, sizeof(line), &len, "%s%02x", i == 0 ? " caps=" : ",", d->cap_ids[i]);
	kprintf("%s\n", line);
}

static void print_summary(const struct pci_topology *topo)
{
	if (topo->ecam)
		kprintf("pci: config=ecam base=0x%llx buses=0-%u functions=%u%s placed_bars=%u\n",
			(unsigned long long)topo->ecam_base, topo->ecam_end_bus, topo->count,
			topo->truncated ? "(truncated)" : "", topo->placed_bars);
	else
		kprintf("pci: config=ports functions=%u%s placed_bars=%u\n", topo->count,
			topo->truncated ? "(truncated)" : "", topo->placed_bars);
}

/* The first function whose BARs could not all get an address, or NULL. */
static const struct pci_device *first_problem(const struct pci_topology *topo)
{
	for (uint32_t i = 0; i < topo->count; i++) {
		if (topo->devices[i].problem != NULL)
			return &topo->devices[i];
	}
	return NULL;
}

void run_pci(const char *name, unsigned pci_flags)
{
	const struct pci_topology *topo = pci_scan(pci_flags);
	const struct pci_device *bad = first_problem(topo);
	char details[DETAILS_MAX];
	char bdf[8];
	int len = 0;
	print_summary(topo);
	if (topo->count == 0) {
		scenario_fail(name, "no PCI functions found");
		return;
	}
	if (bad != NULL) {
		pci_format_bdf(bad->bdf, bdf);
		ksnprintf(details, sizeof(details), "%s bar%u: %s", bdf, bad->problem_bar, bad->problem);
		scenario_fail(name, details);
	} else {
		append(details, sizeof(details), &len, "devices=");
		for (uint32_t i = 0; i < topo->count; i++) {
			const struct pci_device *d = &topo->devices[i];
			pci_format_bdf(d->bdf, bdf);
			append(details, sizeof(details), &len, "%s%s %04x:%04x", i == 0 ? "" : ",",
			       bdf, d->vendor, d->device);
		}
		scenario_pass(name, details);
	}
	for (uint32_t i = 0; i < topo->count; i++)
		print_device(&topo->devices[i]);
}
