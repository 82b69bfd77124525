/*
 * The pci scenario: enumerates (pci_scan) and reports every function.
 * PASS "devices=<bb:dd.f vvvv:dddd>,..." (hex, lower case, in scan order), then one line per
 * function: "pci: bb:dd.f vvvv:dddd class=ccsspp rev=rr hdr=h[ bus=n][ barN=...][ caps=..]"
 * with barN=<io|mem32|mem64>[-pf]:0x<base>+0x<size>[:placed] (placed: this guest chose the
 * address). FAIL "no PCI functions found" or "<bdf> bar<N>: <why it has no address>".
 * A summary line "pci: config=<ecam|ports> ..." comes first. pci_flags: pci_scan's flags
 * (they count only on the first scan of a boot).
 */
#ifndef OXGUEST_PCI_SCENARIO_H
#define OXGUEST_PCI_SCENARIO_H

void run_pci(const char *name, unsigned pci_flags);

#endif
