#include "acpi.h"

#include "console.h"
#include "string.h"

#define MAPPED_LIMIT 0x100000000ULL
#define SDT_HEADER_LEN 36
/* Sanity bound on the tables this guest reads (RSDT/XSDT, FADT, MADT are all small). */
#define TABLE_MAX_LEN 0x10000
#define ROOT_MAX_ENTRIES 256

/* FADT field offsets (ACPI 6.5, table 5.9). */
#define FADT_PM1A_EVT 56
#define FADT_PM1A_CNT 64
#define FADT_PM1B_CNT 68
#define FADT_PM_TMR 76
#define FADT_PM1_EVT_LEN 88
#define FADT_FLAGS 112
#define FADT_RESET_REG 116
#define FADT_RESET_VALUE 128
#define FADT_X_PM1A_EVT 148
#define FADT_X_PM1A_CNT 172
#define FADT_X_PM_TMR 208
#define FADT_FLAG_RESET_REG_SUP (1u << 10)
#define GAS_LEN 12

/* MADT layout (ACPI 6.5, 5.2.12). */
#define MADT_LAPIC_ADDR 36
#define MADT_ENTRIES 44
#define MADT_TYPE_LOCAL_APIC 0
#define MADT_TYPE_LAPIC_OVERRIDE 5
#define MADT_LAPIC_ENABLED 1u

/* MCFG layout (PCI Firmware 3.2, 4.1.2): reserved 8 bytes, then 16-byte allocations. */
#define MCFG_ENTRIES 44
#define MCFG_ENTRY_LEN 16
#define MCFG_BASE 0
#define MCFG_SEGMENT 8
#define MCFG_START_BUS 10
#define MCFG_END_BUS 11
/* ECAM: 1 MiB of configuration space per bus. */
#define ECAM_BUS_SHIFT 20

/* docs/platform.md values, used when the firmware tables do not say. */
#define PLATFORM_PM1A_EVT 0x600
#define PLATFORM_PM1_EVT_LEN 4
#define PLATFORM_PM1A_CNT 0x604
#define PLATFORM_PM_TMR 0x608
#define PLATFORM_RESET_PORT 0x60C
#define PLATFORM_RESET_VALUE 0x06
#define PLATFORM_LAPIC_BASE 0xFEE00000ULL

static struct platform plat;

const struct platform *platform(void)
{
	return &plat;
}

static const uint8_t *phys(uint64_t addr)
{
	return (const uint8_t *)(uintptr_t)addr;
}

static bool range_mapped(uint64_t addr, uint64_t len)
{
	return addr != 0 && addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr;
}

static uint8_t checksum(const uint8_t *p, uint32_t len)
{
	uint8_t sum = 0;
	for (uint32_t i = 0; i < len; i++)
		sum += p[i];
	return sum;
}

/* Validates the SDT header at addr; returns the table and its length, or NULL. */
static const uint8_t *map_table(uint64_t addr, const char *signature, uint32_t *len_out)
{
	if (!range_mapped(addr, SDT_HEADER_LEN))
		return NULL;
	const uint8_t *table = phys(addr);
	if (memcmp(table, signature, 4) != 0)
		return NULL;
	uint32_t len = load_u32(table + 4);
	if (len < SDT_HEADER_LEN || len > TABLE_MAX_LEN || !range_mapped(addr, len)) {
		kprintf("oxguest: acpi %s at 0x%llx has bad length %u, ignored\n", signature,
			(unsigned long long)addr, len);
		return NULL;
	}
	if (checksum(table, len) != 0)
		kprintf("oxguest: acpi %s checksum mismatch (table used anyway)\n", signature);
	*len_out = len;
	return table;
}

/* An I/O port from a 32-bit FADT block field, or the I/O-space X_ GAS when that is zero. */
static uint16_t fadt_port(const uint8_t *fadt, uint32_t len, uint32_t legacy, uint32_t gas)
{
	if (len >= legacy + 4) {
		uint32_t port = load_u32(fadt + legacy);
		if (port != 0)
			return port < 0x10000 ? (uint16_t)port : 0;
	}
	if (len >= gas + GAS_LEN && fadt[gas] == GAS_SYSTEM_IO) {
		uint64_t port = load_u64(fadt + gas + 4);
		return port < 0x10000 ? (uint16_t)port : 0;
	}
	return 0;
}

static void parse_reset_register(const uint8_t *fadt, uint32_t len)
{
	plat.reset.present = false;
	if (len < FADT_RESET_VALUE + 1)
		return;
	if (!(load_u32(fadt + FADT_FLAGS) & FADT_FLAG_RESET_REG_SUP))
		return;
	uint8_t space = fadt[FADT_RESET_REG];
	uint64_t address = load_u64(fadt + FADT_RESET_REG + 4);
	bool valid = (space == GAS_SYSTEM_IO && address != 0 && address < 0x10000) ||
		     (space == GAS_SYSTEM_MEMORY && range_mapped(address, 1));
	if (!valid)
		return;
	plat.reset.present = true;
	plat.reset.space = space;
	plat.reset.address = address;
	plat.reset.value = fadt[FADT_RESET_VALUE];
}

static void parse_fadt(const uint8_t *fadt, uint32_t len)
{
	plat.have_fadt = true;
	plat.pm1a_evt = fadt_port(fadt, len, FADT_PM1A_EVT, FADT_X_PM1A_EVT);
	/* Status and enable halves of at least 2 bytes each (ACPI 6.5, 4.8.3.1). */
	plat.pm1_evt_len = len > FADT_PM1_EVT_LEN && fadt[FADT_PM1_EVT_LEN] >= 4 &&
				   fadt[FADT_PM1_EVT_LEN] % 2 == 0
			       ? fadt[FADT_PM1_EVT_LEN]
			       : PLATFORM_PM1_EVT_LEN;
	plat.pm1a_cnt = fadt_port(fadt, len, FADT_PM1A_CNT, FADT_X_PM1A_CNT);
	plat.pm1b_cnt = len >= FADT_PM1B_CNT + 4 && load_u32(fadt + FADT_PM1B_CNT) < 0x10000
				? (uint16_t)load_u32(fadt + FADT_PM1B_CNT)
				: 0;
	plat.pm_timer = fadt_port(fadt, len, FADT_PM_TMR, FADT_X_PM_TMR);
	parse_reset_register(fadt, len);
}

static void add_cpu(uint8_t apic_id)
{
	if (plat.cpu_count >= MAX_CPUS) {
		plat.cpus_truncated = true;
		return;
	}
	plat.apic_ids[plat.cpu_count++] = apic_id;
}

static void parse_madt(const uint8_t *madt, uint32_t len)
{
	plat.have_madt = true;
	plat.lapic_base = load_u32(madt + MADT_LAPIC_ADDR);
	uint32_t off = MADT_ENTRIES;
	while (off + 2 <= len) {
		uint8_t type = madt[off];
		uint8_t entry_len = madt[off + 1];
		if (entry_len < 2 || entry_len > len - off)
			break; /* malformed: stop rather than loop or overrun */
		const uint8_t *e = madt + off;
		if (type == MADT_TYPE_LOCAL_APIC && entry_len >= 8 &&
		    (load_u32(e + 4) & MADT_LAPIC_ENABLED))
			add_cpu(e[3]);
		if (type == MADT_TYPE_LAPIC_OVERRIDE && entry_len >= 12)
			plat.lapic_base = load_u64(e + 4);
		off += entry_len;
	}
}

/*
 * Takes the first allocation of segment 0 that decodes bus 0 and lies inside the identity
 * map; this guest does not use other segments.
 */
static void parse_mcfg(const uint8_t *mcfg, uint32_t len)
{
	for (uint32_t off = MCFG_ENTRIES; off + MCFG_ENTRY_LEN <= len; off += MCFG_ENTRY_LEN) {
		const uint8_t *e = mcfg + off;
		uint64_t base = load_u64(e + MCFG_BASE);
		uint8_t start = e[MCFG_START_BUS];
		uint8_t end = e[MCFG_END_BUS];
		uint64_t span = ((uint64_t)end + 1) << ECAM_BUS_SHIFT;
		if (load_u16(e + MCFG_SEGMENT) != 0 || start != 0 || end < start)
			continue;
		if (!range_mapped(base, span)) {
			kprintf("oxguest: acpi MCFG window 0x%llx (buses %u-%u) is outside the "
				"identity map, ignored\n",
				(unsigned long long)base, start, end);
			continue;
		}
		plat.have_mcfg = true;
		plat.ecam_base = base;
		plat.ecam_start_bus = start;
		plat.ecam_end_bus = end;
		return;
	}
}

static void visit_table(uint64_t addr)
{
	uint32_t len;
	const uint8_t *table;
	if (!plat.have_fadt && (table = map_table(addr, "FACP", &len)) != NULL)
		parse_fadt(table, len);
	else if (!plat.have_madt && (table = map_table(addr, "APIC", &len)) != NULL)
		parse_madt(table, len);
	else if (!plat.have_mcfg && (table = map_table(addr, "MCFG", &len)) != NULL)
		parse_mcfg(table, len);
}

/* Walks the XSDT (8-byte entries) or RSDT (4-byte entries). */
static bool walk_root(uint64_t addr, bool xsdt)
{
	uint32_t len;
	const uint8_t *root = map_table(addr, xsdt ? "XSDT" : "RSDT", &len);
	if (root == NULL)
		return false;
	uint32_t entry_size = xsdt ? 8 : 4;
	uint32_t count = (len - SDT_HEADER_LEN) / entry_size;
	for (uint32_t i = 0; i < count && i < ROOT_MAX_ENTRIES; i++) {
		const uint8_t *entry = root + SDT_HEADER_LEN + i * entry_size;
		visit_table(xsdt ? load_u64(entry) : load_u32(entry));
	}
	return true;
}

static bool rsdp_valid(const uint8_t *rsdp)
{
	if (memcmp(rsdp, "RSD PTR ", 8) != 0 || checksum(rsdp, 20) != 0)
		return false;
	return rsdp[15] < 2 || checksum(rsdp, 36) == 0;
}

static void parse_rsdp(uint64_t addr)
{
	if (!range_mapped(addr, 36) || !rsdp_valid(phys(addr))) {
		kprintf("oxguest: acpi RSDP at 0x%llx is invalid, using platform defaults\n",
			(unsigned long long)addr);
		return;
	}
	plat.rsdp = addr;
	const uint8_t *rsdp = phys(addr);
	uint64_t xsdt = rsdp[15] >= 2 ? load_u64(rsdp + 24) : 0;
	if (xsdt != 0 && walk_root(xsdt, true))
		return;
	if (!walk_root(load_u32(rsdp + 16), false))
		kprintf("oxguest: acpi RSDP at 0x%llx has no valid RSDT/XSDT\n",
			(unsigned long long)addr);
}

static void apply_fallbacks(void)
{
	if (!plat.have_fadt) {
		plat.pm1a_evt = PLATFORM_PM1A_EVT;
		plat.pm1_evt_len = PLATFORM_PM1_EVT_LEN;
		plat.pm1a_cnt = PLATFORM_PM1A_CNT;
		plat.pm1b_cnt = 0;
		plat.pm_timer = PLATFORM_PM_TMR;
		plat.reset.present = true;
		plat.reset.space = GAS_SYSTEM_IO;
		plat.reset.address = PLATFORM_RESET_PORT;
		plat.reset.value = PLATFORM_RESET_VALUE;
	}
	if (plat.pm1a_evt == 0) {
		/* A FADT without an event block: the docs/platform.md port is the best guess. */
		plat.pm1a_evt = PLATFORM_PM1A_EVT;
		plat.pm1_evt_len = PLATFORM_PM1_EVT_LEN;
	}
	if (!plat.have_madt)
		plat.lapic_base = PLATFORM_LAPIC_BASE;
}

static void print_summary(void)
{
	char reset[48] = "none";
	char mcfg[48] = "none";
	if (plat.have_mcfg)
		ksnprintf(mcfg, sizeof(mcfg), "0x%llx/%u-%u", (unsigned long long)plat.ecam_base,
			  plat.ecam_start_bus, plat.ecam_end_bus);
	if (plat.reset.present)
		ksnprintf(reset, sizeof(reset), "%s:0x%llx=0x%02x",
			  plat.reset.space == GAS_SYSTEM_IO ? "io" : "mem",
			  (unsigned long long)plat.reset.address, plat.reset.value);
	kprintf("oxguest: acpi rsdp=0x%llx fadt=%s madt=%s pm1a_evt=0x%x pm1a_cnt=0x%x pm1b_cnt=0x%x "
		"pm_tmr=0x%x reset=%s lapic=0x%llx cpus=%u%s mcfg=%s\n",
		(unsigned long long)plat.rsdp, plat.have_fadt ? "yes" : "no(defaults)",
		plat.have_madt ? "yes" : "no", plat.pm1a_evt, plat.pm1a_cnt, plat.pm1b_cnt, plat.pm_timer, reset,
		(unsigned long long)plat.lapic_base, plat.cpu_count,
		plat.cpus_truncated ? "(truncated)" : "", mcfg);
}

void acpi_init(uint64_t rsdp)
{
	if (rsdp != 0)
		parse_rsdp(rsdp);
	apply_fallbacks();
	print_summary();
}
