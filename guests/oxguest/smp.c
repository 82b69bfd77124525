#include "smp.h"

#include "acpi.h"
#include "console.h"
#include "io.h"
#include "string.h"
#include "timer.h"

#define MSR_APIC_BASE 0x1B
#define APIC_BASE_X2APIC (1ull << 10)
#define APIC_BASE_ENABLE (1ull << 11)
#define APIC_BASE_ADDR_MASK 0xFFFFFF000ull

#define LAPIC_ID 0x020
#define LAPIC_SVR 0x0F0
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define SVR_ENABLE 0x100
#define SVR_SPURIOUS_VECTOR 0xFF
#define ICR_INIT 0x00004500		/* delivery mode INIT, level assert */
#define ICR_STARTUP 0x00004600		/* delivery mode start-up, vector in bits 7:0 */
#define ICR_DELIVERY_PENDING (1u << 12)

/* Intel SDM 8.4.4.1: 10 ms after INIT, 200 us between the SIPIs. */
#define INIT_DELAY_US 10000
#define SIPI_DELAY_US 200
#define ICR_TIMEOUT_US 100000
#define ALL_APS_TIMEOUT_US 2000000

/* trampoline.S */
extern const uint8_t trampoline_start[], trampoline_end[];
extern uint8_t trampoline_cr3[], trampoline_stack[];
extern uint8_t ap_stacks[];

/* Written by APs. The start-up slot is written by the BSP before the SIPIs. */
static volatile uint32_t ap_slot;
static volatile uint8_t ap_cpuid_ids[MAX_CPUS];
static volatile uint8_t ap_lapic_ids[MAX_CPUS];
static uint32_t ap_checked_in;

static bool attempted;
static struct smp_result result;
static uintptr_t lapic;

static uint32_t lapic_read(uint32_t reg)
{
	return mmio_read32(lapic + reg);
}

static void lapic_write(uint32_t reg, uint32_t value)
{
	mmio_write32(lapic + reg, value);
}

/* The trampoline page's copy of a trampoline.S variable. */
static volatile uint64_t *trampoline_slot(const uint8_t *symbol)
{
	uintptr_t page = TRAMPOLINE_ADDR;
	return (volatile uint64_t *)(page + (uintptr_t)(symbol - trampoline_start));
}

static bool fail(const char *reason)
{
	ksnprintf(result.error, sizeof(result.error), "%s", reason);
	return false;
}

static bool wait_icr_idle(void)
{
	struct deadline d;
	deadline_start(&d, ICR_TIMEOUT_US);
	while (lapic_read(LAPIC_ICR_LOW) & ICR_DELIVERY_PENDING) {
		if (deadline_expired(&d))
			return false;
	}
	return true;
}

static bool send_ipi(uint8_t apic_id, uint32_t command)
{
	if (!wait_icr_idle())
		return false;
	lapic_write(LAPIC_ICR_HIGH, (uint32_t)apic_id << 24);
	lapic_write(LAPIC_ICR_LOW, command);
	return wait_icr_idle();
}

static bool ids_agree(uint32_t bsp_id, const struct platform *p)
{
	uint32_t cpuid_id = cpuid(1).ebx >> 24;
	if (cpuid_id != bsp_id) {
		ksnprintf(result.error, sizeof(result.error),
			  "BSP APIC ID mismatch: CPUID %u, LAPIC %u", cpuid_id, bsp_id);
		return false;
	}
	for (uint32_t i = 0; i < p->cpu_count; i++) {
		if (p->apic_ids[i] == bsp_id)
			return true;
	}
	ksnprintf(result.error, sizeof(result.error), "BSP APIC ID %u is not in the MADT", bsp_id);
	return false;
}

/* Checks everything AP start-up relies on. Sets lapic. */
static bool prepare(const struct boot_info *info, const struct platform *p, uint32_t *bsp_id)
{
	if (!p->have_madt)
		return fail("no MADT (no ACPI): cannot enumerate CPUs");
	if (p->cpus_truncated)
		return fail("MADT lists more CPUs than this guest supports");
	if (!e820_range_usable(info, TRAMPOLINE_ADDR, 4096))
		return fail("trampoline page 0x1000 is not usable RAM in the e820 map");
	if (p->lapic_base >= 0x100000000ull || (p->lapic_base & 0xFFF) != 0)
		return fail("local APIC address from the MADT is not a page below 4 GiB");
	uint64_t apic_base = rdmsr(MSR_APIC_BASE);
	if (apic_base & APIC_BASE_X2APIC)
		return fail("local APIC is in x2APIC mode");
	if (!(apic_base & APIC_BASE_ENABLE))
		return fail("local APIC is disabled in IA32_APIC_BASE");
	if ((apic_base & APIC_BASE_ADDR_MASK) != p->lapic_base) {
		ksnprintf(result.error, sizeof(result.error),
			  "IA32_APIC_BASE says 0x%llx, MADT says 0x%llx",
			  (unsigned long long)(apic_base & APIC_BASE_ADDR_MASK),
			  (unsigned long long)p->lapic_base);
		return false;
	}
	lapic = (uintptr_t)p->lapic_base;
	*bsp_id = lapic_read(LAPIC_ID) >> 24;
	return ids_agree(*bsp_id, p);
}

static void install_trampoline(void)
{
	uintptr_t page = TRAMPOLINE_ADDR;
	memcpy((void *)page, trampoline_start, (size_t)(trampoline_end - trampoline_start));
	*trampoline_slot(trampoline_cr3) = read_cr3();
	*trampoline_slot(trampoline_stack) = 0;
}

/* Starts one AP in slot and waits for it to check in. */
static bool start_ap(uint32_t slot, uint8_t apic_id, struct deadline *deadline)
{
	uint32_t before = __atomic_load_n(&ap_checked_in, __ATOMIC_ACQUIRE);
	ap_slot = slot;
	*trampoline_slot(trampoline_stack) = (uintptr_t)(ap_stacks + (slot + 1) * AP_STACK_SIZE);
	if (!send_ipi(apic_id, ICR_INIT))
		goto icr_stuck;
	delay_us(INIT_DELAY_US);
	for (int i = 0; i < 2; i++) {
		if (!send_ipi(apic_id, ICR_STARTUP | TRAMPOLINE_VECTOR))
			goto icr_stuck;
		delay_us(SIPI_DELAY_US);
	}
	while (__atomic_load_n(&ap_checked_in, __ATOMIC_ACQUIRE) == before) {
		if (deadline_expired(deadline)) {
			ksnprintf(result.error, sizeof(result.error),
				  "AP with APIC ID %u did not come up in time", apic_id);
			return false;
		}
	}
	if (ap_cpuid_ids[slot] != apic_id || ap_lapic_ids[slot] != apic_id) {
		ksnprintf(result.error, sizeof(result.error),
			  "APIC ID mismatch: MADT %u, CPUID %u, LAPIC %u", apic_id,
			  ap_cpuid_ids[slot], ap_lapic_ids[slot]);
		return false;
	}
	return true;
icr_stuck:
	ksnprintf(result.error, sizeof(result.error),
		  "ICR delivery status stuck sending to APIC ID %u", apic_id);
	return false;
}

static bool start_all(const struct platform *p, uint32_t bsp_id)
{
	struct deadline deadline;
	bool ok = true;
	uint32_t slot = 0;
	install_trampoline();
	lapic_write(LAPIC_SVR, (lapic_read(LAPIC_SVR) & ~0xFFu) | SVR_ENABLE | SVR_SPURIOUS_VECTOR);
	deadline_start(&deadline, ALL_APS_TIMEOUT_US);
	for (uint32_t i = 0; i < p->cpu_count && ok; i++) {
		uint8_t id = p->apic_ids[i];
		if (id == bsp_id || start_ap(slot++, id, &deadline))
			result.online_ids[result.online++] = id;
		else
			ok = false;
	}
	/* A late AP must not run on a stack that is handed out again: it halts instead. */
	*trampoline_slot(trampoline_stack) = 0;
	return ok;
}

const struct smp_result *smp_bring_up(const struct boot_info *info)
{
	if (attempted)
		return &result;
	attempted = true;
	const struct platform *p = platform();
	uint32_t bsp_id;
	result.expected = p->cpu_count;
	if (!prepare(info, p, &bsp_id)) {
		/* The BSP itself is running in any case. */
		result.online = 1;
		result.online_ids[0] = (uint8_t)(cpuid(1).ebx >> 24);
		return &result;
	}
	result.ok = start_all(p, bsp_id);
	return &result;
}

void smp_format_ids(const struct smp_result *r, const char *sep, char *buf, int size)
{
	int len = 0;
	buf[0] = '\0';
	for (uint32_t i = 0; i < r->online && len < size; i++)
		len += ksnprintf(buf + len, size - len, "%s%u", i == 0 ? "" : sep, r->online_ids[i]);
}

_Noreturn void ap_main(void)
{
	uint32_t slot = ap_slot;
	if (slot < MAX_CPUS) {
		ap_cpuid_ids[slot] = (uint8_t)(cpuid(1).ebx >> 24);
		ap_lapic_ids[slot] = (uint8_t)(mmio_read32(lapic + LAPIC_ID) >> 24);
	}
	/* lock xadd: publishes the IDs above (x86 stores are ordered) and counts this AP. */
	__atomic_fetch_add(&ap_checked_in, 1, __ATOMIC_SEQ_CST);
	halt_forever();
}
