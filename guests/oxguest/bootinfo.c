#include "bootinfo.h"

#include "console.h"
#include "main.h"
#include "string.h"

/* hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). */
#define PVH_MAGIC 0x336ec578
#define PVH_OFF_MAGIC 0
#define PVH_OFF_VERSION 4
#define PVH_OFF_NR_MODULES 12
#define PVH_OFF_MODLIST 16
#define PVH_OFF_CMDLINE 24
#define PVH_OFF_RSDP 32
#define PVH_OFF_MEMMAP 40
#define PVH_OFF_MEMMAP_ENTRIES 48
#define PVH_MEMMAP_ENTRY_SIZE 24
/* hvm_modlist_entry: paddr, size, cmdline_paddr, reserved (all u64). */
#define PVH_MODLIST_ENTRY_SIZE 32
#define PVH_MOD_OFF_PADDR 0
#define PVH_MOD_OFF_SIZE 8

/* boot_params (Linux Documentation/arch/x86/zero-page.rst). */
#define BP_OFF_ACPI_RSDP 0x070
#define BP_OFF_EXT_RAMDISK_IMAGE 0x0C0
#define BP_OFF_EXT_RAMDISK_SIZE 0x0C4
#define BP_OFF_EXT_CMDLINE 0x0C8
#define BP_OFF_E820_ENTRIES 0x1E8
#define BP_OFF_RAMDISK_IMAGE 0x218
#define BP_OFF_RAMDISK_SIZE 0x21C
#define BP_OFF_CMDLINE 0x228
#define BP_OFF_E820_TABLE 0x2D0
#define BP_E820_ENTRY_SIZE 20

/* Only the identity-mapped first 4 GiB can be read. */
#define MAPPED_LIMIT 0x100000000ULL

#define RSDP_SCAN_START 0xE0000
#define RSDP_SCAN_END 0x100000

static struct boot_info boot_info;

static const uint8_t *phys(uint64_t addr)
{
	return (const uint8_t *)(uintptr_t)addr;
}

static void copy_cmdline(struct boot_info *info, uint64_t addr)
{
	if (addr == 0 || addr >= MAPPED_LIMIT - CMDLINE_MAX)
		return;
	const char *src = (const char *)phys(addr);
	size_t n = 0;
	while (n + 1 < CMDLINE_MAX && src[n] != '\0') {
		info->cmdline[n] = src[n];
		n++;
	}
	info->cmdline[n] = '\0';
	info->cmdline_truncated = src[n] != '\0';
}

static void add_e820(struct boot_info *info, uint64_t addr, uint64_t size, uint32_t type)
{
	if (info->e820_count >= E820_MAX) {
		info->e820_truncated = true;
		return;
	}
	struct e820_entry *e = &info->e820[info->e820_count++];
	e->addr = addr;
	e->size = size;
	e->type = type;
}

/* Looks for "RSD PTR " on 16-byte boundaries in the BIOS area, as ACPI specifies. */
static uint64_t scan_rsdp(void)
{
	const uint64_t signature = 0x2052545020445352ULL; /* "RSD PTR " little-endian */
	for (uint64_t addr = RSDP_SCAN_START; addr < RSDP_SCAN_END; addr += 16) {
		if (load_u64(phys(addr)) == signature)
			return addr;
	}
	return 0;
}

static void finish_rsdp(struct boot_info *info, uint64_t from_loader)
{
	if (from_loader != 0 && from_loader < MAPPED_LIMIT) {
		info->rsdp = from_loader;
		info->rsdp_source = "boot";
		return;
	}
	info->rsdp = scan_rsdp();
	info->rsdp_source = info->rsdp != 0 ? "scan" : "none";
}

/* The initrd is the first module, as for Linux; later modules are only counted. */
static void copy_pvh_initrd(struct boot_info *info, const uint8_t *si)
{
	info->pvh_modules = load_u32(si + PVH_OFF_NR_MODULES);
	uint64_t list = load_u64(si + PVH_OFF_MODLIST);
	if (info->pvh_modules == 0 || list == 0 || list >= MAPPED_LIMIT - PVH_MODLIST_ENTRY_SIZE)
		return;
	info->initrd_addr = load_u64(phys(list + PVH_MOD_OFF_PADDR));
	info->initrd_size = load_u64(phys(list + PVH_MOD_OFF_SIZE));
}

static void parse_start_info(struct boot_info *info, uint64_t addr)
{
	const uint8_t *si = phys(addr);
	if (addr == 0 || addr >= MAPPED_LIMIT || load_u32(si + PVH_OFF_MAGIC) != PVH_MAGIC) {
		kprintf("oxguest: bad hvm_start_info at 0x%llx, ignoring it\n",
			(unsigned long long)addr);
		finish_rsdp(info, 0);
		return;
	}
	copy_cmdline(info, load_u64(si + PVH_OFF_CMDLINE));
	copy_pvh_initrd(info, si);
	uint64_t rsdp = load_u64(si + PVH_OFF_RSDP);
	/* The memory map only exists from version 1 on. */
	if (load_u32(si + PVH_OFF_VERSION) >= 1) {
		uint64_t map = load_u64(si + PVH_OFF_MEMMAP);
		uint32_t count = load_u32(si + PVH_OFF_MEMMAP_ENTRIES);
		if (map != 0 && map < MAPPED_LIMIT - (uint64_t)E820_MAX * PVH_MEMMAP_ENTRY_SIZE) {
			for (uint32_t i = 0; i < count && i <= E820_MAX; i++) {
				const uint8_t *e = phys(map + (uint64_t)i * PVH_MEMMAP_ENTRY_SIZE);
				add_e820(info, load_u64(e), load_u64(e + 8), load_u32(e + 16));
			}
		}
	}
	finish_rsdp(info, rsdp);
}

static void parse_boot_params(struct boot_info *info, uint64_t addr)
{
	if (addr == 0 || addr >= MAPPED_LIMIT - 4096) {
		kprintf("oxguest: bad boot_params at 0x%llx, ignoring it\n", (unsigned long long)addr);
		finish_rsdp(info, 0);
		return;
	}
	const uint8_t *bp = phys(addr);
	uint64_t cmdline = load_u32(bp + BP_OFF_CMDLINE) |
			   ((uint64_t)load_u32(bp + BP_OFF_EXT_CMDLINE) << 32);
	copy_cmdline(info, cmdline);
	info->initrd_addr = load_u32(bp + BP_OFF_RAMDISK_IMAGE) |
			    ((uint64_t)load_u32(bp + BP_OFF_EXT_RAMDISK_IMAGE) << 32);
	info->initrd_size = load_u32(bp + BP_OFF_RAMDISK_SIZE) |
			    ((uint64_t)load_u32(bp + BP_OFF_EXT_RAMDISK_SIZE) << 32);
	uint8_t count = bp[BP_OFF_E820_ENTRIES];
	/* The zero page has room for 128 entries; the count is a u8 but can still lie. */
	for (uint32_t i = 0; i < count && i <= E820_MAX; i++) {
		const uint8_t *e = bp + BP_OFF_E820_TABLE + i * BP_E820_ENTRY_SIZE;
		add_e820(info, load_u64(e), load_u64(e + 8), load_u32(e + 16));
	}
	finish_rsdp(info, load_u64(bp + BP_OFF_ACPI_RSDP));
}

_Noreturn void entry_pvh(uint64_t start_info)
{
	console_init();
	boot_info.protocol = "pvh";
	parse_start_info(&boot_info, start_info);
	main(&boot_info);
}

_Noreturn void entry_linux64(uint64_t boot_params)
{
	console_init();
	boot_info.protocol = "linux64";
	parse_boot_params(&boot_info, boot_params);
	main(&boot_info);
}

uint64_t e820_usable_bytes(const struct boot_info *info)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < info->e820_count; i++) {
		if (info->e820[i].type == E820_USABLE)
			total += info->e820[i].size;
	}
	return total;
}

bool e820_range_usable(const struct boot_info *info, uint64_t addr, uint64_t size)
{
	for (uint32_t i = 0; i < info->e820_count; i++) {
		const struct e820_entry *e = &info->e820[i];
		if (e->type == E820_USABLE && addr >= e->addr && addr - e->addr <= e->size &&
		    size <= e->size - (addr - e->addr))
			return true;
	}
	return false;
}
