#include "virtio_msix.h"

#include <stddef.h>
#include <stdint.h>

#include "console.h"
#include "idt.h"
#include "io.h"
#include "layout.h"
#include "pci.h"
#include "scenarios.h"
#include "string.h"
#include "timer.h"
#include "virtio.h"

#define PCI_CAP_ID_MSIX 0x11
/* Message control (upper half of the capability's first dword), table and PBA registers. */
#define MSIX_CONTROL_ENABLE (1u << 15)
#define MSIX_CAP_TABLE 4
#define MSIX_CAP_PBA 8
#define MSIX_BIR_MASK 7u
#define MSIX_ENTRY_SIZE 16
#define MSIX_ENTRY_DATA 8
#define MSIX_ENTRY_CONTROL 12
#define MSIX_MASKED 1u
/* The table entry queue 0 signals through (entry 0 would be the configuration vector). */
#define QUEUE_ENTRY 1
#define MSIX_ENTRIES_USED 2

/* Common configuration registers this file writes (virtio 1.2, 4.1.4.3). */
#define COMMON_CONFIG_MSIX_VECTOR 0x10
#define COMMON_QUEUE_SELECT 0x16
#define COMMON_QUEUE_MSIX_VECTOR 0x1A
#define VIRTIO_MSI_NO_VECTOR 0xFFFF

#define MSR_APIC_BASE 0x1B
#define APIC_BASE_X2APIC (1ull << 10)
#define APIC_BASE_ADDR_MASK 0xFFFFFF000ull
#define LAPIC_ID 0x020
#define LAPIC_EOI 0x0B0
#define LAPIC_SVR 0x0F0
#define LAPIC_IRR 0x200
#define SVR_ENABLE 0x100
#define SVR_SPURIOUS_VECTOR 0xFF
#define MSI_ADDRESS_BASE 0xFEE00000u

#define REQUEST_TIMEOUT_US 2000000u
/* How long a message may take to arrive after the request that caused it completed. */
#define ARRIVAL_TIMEOUT_US 500000u
#define REQUEST_BYTES 16
#define WHY_MAX 160

struct msix_run {
	struct virtio_dev dev;
	struct virtq queue;
	uint16_t bdf;
	uint8_t cap;
	uintptr_t table;
	uintptr_t pba;
	uintptr_t lapic;
	char why[WHY_MAX];
};

static struct virtq_mem msix_ring;
static uint8_t msix_bytes[REQUEST_BYTES] __attribute__((aligned(64)));
static struct msix_run run;
/* Only entry MSIX_TEST_VECTOR is present: anything else arriving in the window faults. */
static struct idt_gate msix_idt[MSIX_TEST_VECTOR + 1] __attribute__((aligned(16)));

/* Written by msix_isr. */
volatile uint32_t oxguest_msix_hits;
uintptr_t oxguest_msix_eoi;
extern char oxguest_msix_isr[];

/* Counts the interrupt and ends it at the local APIC; iretq restores RFLAGS. */
__asm__(".text\n"
	".global oxguest_msix_isr\n"
	"oxguest_msix_isr:\n"
	"\tpushq %rax\n"
	"\tincl oxguest_msix_hits(%rip)\n"
	"\tmovq oxguest_msix_eoi(%rip), %rax\n"
	"\tmovl $0, (%rax)\n"
	"\tpopq %rax\n"
	"\tiretq\n");

static bool fail(struct msix_run *r, const char *why)
{
	ksnprintf(r->why, sizeof(r->why), "%s", why);
	return false;
}

/* The address of register reg (table or PBA) of the MSI-X capability, 0 if unusable. */
static uintptr_t msix_region(const struct pci_device *pci, uint8_t cap, uint16_t reg)
{
	uint32_t value = pci_read32(pci->bdf, cap + reg);
	if ((value & MSIX_BIR_MASK) >= PCI_BAR_COUNT)
		return 0;
	const struct pci_bar *bar = &pci->bars[value & MSIX_BIR_MASK];
	if (bar->base == 0 ||
	    (bar->kind != PCI_BAR_MEM32 && bar->kind != PCI_BAR_MEM64) ||
	    bar->base + bar->size > 0x100000000ull)
		return 0;
	return (uintptr_t)(bar->base + (value & ~MSIX_BIR_MASK));
}

static bool find_msix(struct msix_run *r, const struct pci_device *pci)
{
	for (uint8_t i = 0; i < pci->cap_count; i++) {
		if (pci->cap_ids[i] == PCI_CAP_ID_MSIX)
			r->cap = pci->cap_offsets[i];
	}
	if (r->cap == 0)
		return fail(r, "the device has no MSI-X capability");
	uint16_t entries = (uint16_t)((pci_read16(pci->bdf, r->cap + 2) & 0x7FF) + 1);
	if (entries < MSIX_ENTRIES_USED)
		return fail(r, "the MSI-X table has fewer than 2 entries");
	r->bdf = pci->bdf;
	r->table = msix_region(pci, r->cap, MSIX_CAP_TABLE);
	r->pba = msix_region(pci, r->cap, MSIX_CAP_PBA);
	if (r->table == 0 || r->pba == 0)
		return fail(r, "the MSI-X table or PBA is not in a placed memory BAR below 4 GiB");
	return true;
}

static bool find_lapic(struct msix_run *r)
{
	uint64_t base = rdmsr(MSR_APIC_BASE);
	if (base & APIC_BASE_X2APIC)
		return fail(r, "the local APIC is in x2APIC mode");
	r->lapic = (uintptr_t)(base & APIC_BASE_ADDR_MASK);
	oxguest_msix_eoi = r->lapic + LAPIC_EOI;
	/* A software-disabled local APIC accepts no fixed interrupts. */
	uint32_t svr = mmio_read32(r->lapic + LAPIC_SVR);
	mmio_write32(r->lapic + LAPIC_SVR, (svr & ~0xFFu) | SVR_ENABLE | SVR_SPURIOUS_VECTOR);
	return true;
}

static void msix_set_control(const struct msix_run *r, uint16_t control)
{
	uint32_t dword = pci_read32(r->bdf, r->cap);
	pci_write32(r->bdf, r->cap, (dword & 0xFFFFu) | (uint32_t)control << 16);
}

static void entry_set_masked(const struct msix_run *r, uint16_t entry, bool masked)
{
	mmio_write32(r->table + entry * MSIX_ENTRY_SIZE + MSIX_ENTRY_CONTROL,
		     masked ? MSIX_MASKED : 0);
}

static bool entry_pending(const struct msix_run *r, uint16_t entry)
{
	return (mmio_read32(r->pba + (entry / 32) * 4) >> (entry % 32)) & 1;
}

static bool vector_in_irr(const struct msix_run *r)
{
	uint32_t word = mmio_read32(r->lapic + LAPIC_IRR + (MSIX_TEST_VECTOR / 32) * 0x10);
	return (word >> (MSIX_TEST_VECTOR % 32)) & 1;
}

/* Entry QUEUE_ENTRY sends MSIX_TEST_VECTOR, fixed and edge-triggered, to this CPU; masked. */
static void program_table(const struct msix_run *r)
{
	uint32_t apic_id = mmio_read32(r->lapic + LAPIC_ID) >> 24;
	for (uint16_t e = 0; e < MSIX_ENTRIES_USED; e++)
		entry_set_masked(r, e, true);
	uintptr_t entry = r->table + QUEUE_ENTRY * MSIX_ENTRY_SIZE;
	mmio_write32(entry, MSI_ADDRESS_BASE | apic_id << 12);
	mmio_write32(entry + 4, 0);
	mmio_write32(entry + MSIX_ENTRY_DATA, MSIX_TEST_VECTOR);
}

static bool setup(struct msix_run *r, const struct pci_device *pci)
{
	if (!virtio_open(&r->dev, pci) || !virtio_negotiate(&r->dev, 0))
		return fail(r, r->dev.error);
	program_table(r);
	msix_set_control(r, MSIX_CONTROL_ENABLE);
	mmio_write16(r->dev.common + COMMON_CONFIG_MSIX_VECTOR, VIRTIO_MSI_NO_VECTOR);
	if (!virtq_init(&r->dev, &r->queue, 0, &msix_ring))
		return fail(r, r->dev.error);
	mmio_write16(r->dev.common + COMMON_QUEUE_SELECT, 0);
	mmio_write16(r->dev.common + COMMON_QUEUE_MSIX_VECTOR, QUEUE_ENTRY);
	if (mmio_read16(r->dev.common + COMMON_QUEUE_MSIX_VECTOR) != QUEUE_ENTRY)
		return fail(r, "the device refused MSI-X vector 1 for queue 0");
	virtio_driver_ok(&r->dev);
	return true;
}

/* One request for REQUEST_BYTES random bytes, answered. */
static bool request(struct msix_run *r)
{
	struct virtq_buf buf = {msix_bytes, REQUEST_BYTES, true};
	struct virtq_completion done;
	if (virtq_add(&r->queue, &buf, 1) < 0)
		return fail(r, "no free descriptor");
	virtq_kick(&r->queue);
	enum virtq_poll result = virtq_wait_used(&r->dev, &r->queue, REQUEST_TIMEOUT_US, &done);
	if (result == VIRTQ_TIMEOUT)
		return fail(r, "no answer to a request within 2000 ms");
	if (result != VIRTQ_USED)
		return fail(r, r->dev.error);
	return true;
}

/* Polls until the vector is in the local APIC's IRR (want) or the PBA bit is set (!want). */
static bool wait_for(const struct msix_run *r, bool in_irr)
{
	struct deadline d;
	deadline_start(&d, ARRIVAL_TIMEOUT_US);
	for (;;) {
		if (in_irr ? vector_in_irr(r) : entry_pending(r, QUEUE_ENTRY))
			return true;
		if (deadline_expired(&d))
			return false;
	}
}

/* Takes the pending interrupt through the one-entry IDT (sti; hlt; cli). */
static void accept_interrupt(void)
{
	msix_idt[MSIX_TEST_VECTOR] = idt_interrupt_gate((uintptr_t)oxguest_msix_isr);
	struct descriptor_table_register saved;
	struct descriptor_table_register ours = {sizeof(msix_idt) - 1, (uintptr_t)msix_idt};
	__asm__ volatile("sidt %0" : "=m"(saved));
	/* hlt returns once the handler ran: the vector is already in the IRR. */
	__asm__ volatile("lidt %0\n\tsti\n\thlt\n\tcli\n\tlidt %1"
			 :
			 : "m"(ours), "m"(saved)
			 : "memory");
}

/* Masked, then unmasked, then direct: the three deliveries the header describes. */
static bool exercise(struct msix_run *r)
{
	if (!request(r))
		return false;
	if (!wait_for(r, false))
		return fail(r, "masked vector: no PBA bit after the request completed");
	if (vector_in_irr(r))
		return fail(r, "masked vector: the message reached the local APIC");
	entry_set_masked(r, QUEUE_ENTRY, false);
	if (!wait_for(r, true))
		return fail(r, "the pending message did not arrive when the vector was unmasked");
	if (entry_pending(r, QUEUE_ENTRY))
		return fail(r, "the PBA bit stayed set after delivery");
	accept_interrupt();
	if (!request(r))
		return false;
	if (!wait_for(r, true))
		return fail(r, "unmasked vector: no message after the request completed");
	accept_interrupt();
	if (oxguest_msix_hits != 2) {
		ksnprintf(r->why, sizeof(r->why), "the handler ran %u times, expected 2",
			  oxguest_msix_hits);
		return false;
	}
	return true;
}

void run_virtio_msix(const char *name, unsigned pci_flags)
{
	struct msix_run *r = &run;
	char details[48];
	memset(r, 0, sizeof(*r));
	oxguest_msix_hits = 0;
	const struct pci_device *pci = scenario_virtio_device(name, pci_flags, VIRTIO_ID_RNG, "virtio-rng");
	if (pci == NULL)
		return;
	bool ok = find_msix(r, pci) && find_lapic(r) && setup(r, pci) && exercise(r);
	if (r->dev.common != 0)
		virtio_reset(&r->dev);
	if (r->table != 0) {
		/* Back to polled operation for later scenarios: vectors masked, MSI-X off. */
		for (uint16_t e = 0; e < MSIX_ENTRIES_USED; e++)
			entry_set_masked(r, e, true);
		msix_set_control(r, 0);
	}
	if (!ok) {
		scenario_fail(name, r->why);
		return;
	}
	ksnprintf(details, sizeof(details), "vector=0x%x pending=yes delivered=%u",
		  MSIX_TEST_VECTOR, oxguest_msix_hits);
	scenario_pass(name, details);
}
