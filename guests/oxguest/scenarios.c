#include "scenarios.h"

#include <stdbool.h>
#include <stdint.h>

#include "acpi.h"
#include "blk_bench.h"
#include "blk_scenarios.h"
#include "blk_snapshot.h"
#include "cmos.h"
#include "cmdline.h"
#include "console.h"
#include "counter.h"
#include "inputs.h"
#include "io.h"
#include "layout.h"
#include "pci.h"
#include "pci_scenario.h"
#include "power.h"
#include "smp.h"
#include "string.h"
#include "timer.h"
#include "virtio.h"
#include "virtio_balloon.h"
#include "virtio_console.h"
#include "virtio_msix.h"
#include "virtio_net.h"
#include "virtio_rng.h"
#include "virtio_vsock.h"

#define WORD_MAX 64
/* With this word, PCI config space goes through ports 0xCF8/0xCFC even when ACPI has an MCFG. */
#define PCI_PORTS_WORD "pci-config=ports"
/* With this word, the guest places every PCI BAR itself, ignoring what firmware assigned. */
#define PCI_REASSIGN_WORD "pci-bars=reassign"

/*
 * Reset marker in CMOS NVRAM, kept by the VMM across a reset. The word index lets the second
 * boot resume right after the reset scenario that caused it, even when the same reset
 * scenario appears twice on the command line.
 */
#define NVRAM_MARKER 0x40
#define NVRAM_METHOD 0x41
#define NVRAM_WORD 0x42
#define MARKER_VALUE 0x5A
#define MARKER_MAX_WORD 255
/*
 * Marker method of the crash scenario (after the reset methods of power.h): found at boot, it
 * means the machine rebooted instead of stopping when the guest crashed.
 */
#define MARKER_CRASH 4

/*
 * Where the crash scenario jumps: the PCI BAR window of the MMIO hole, which oxvmm leaves
 * empty. Fetching an instruction from an address with no memory behind it is something KVM's
 * emulator cannot do on any host (KVM_EXIT_INTERNAL_ERROR, emulation failure).
 */
#define CRASH_ADDR 0xD0000000UL

#define SERIAL_TEMT_TIMEOUT_US 10000

/*
 * wait-shutdown: how long it waits for the power button, and the pause between two reads of
 * PM1_STS (each poll is a handful of emulated instructions and one port exit).
 */
#define POWER_BUTTON_TIMEOUT_US 30000000u
#define POWER_BUTTON_POLL_US 1000u
/* What a read from an I/O port with nothing behind it returns. */
#define FLOATING_BUS16 0xFFFF

struct ctx {
	const struct boot_info *info;
	const char *name;
	uint32_t word_index;
	int reset_method;
};

struct scenario {
	const char *name;
	void (*run)(const struct ctx *ctx);
	int reset_method; /* enum reset_method, MARKER_CRASH, 0 for other scenarios */
};

void scenario_pass(const char *name, const char *details)
{
	kprintf("TEST %s PASS%s%s\n", name, details[0] != '\0' ? " " : "", details);
}

void scenario_fail(const char *name, const char *reason)
{
	kprintf("TEST %s FAIL %s\n", name, reason);
}

const struct pci_device *scenario_virtio_device(const char *name, unsigned pci_flags,
						uint16_t virtio_id, const char *what)
{
	const struct pci_device *pci = virtio_find(pci_flags, virtio_id);
	if (pci == NULL) {
		char why[48];
		ksnprintf(why, sizeof(why), "no %s device", what);
		scenario_fail(name, why);
	}
	return pci;
}

static void run_serial(const struct ctx *ctx)
{
	char why[80];
	const uint8_t patterns[2] = {0x5A, 0xA5};
	for (int i = 0; i < 2; i++) {
		outb(COM1_PORT + COM1_SCR, patterns[i]);
		uint8_t got = inb(COM1_PORT + COM1_SCR);
		if (got != patterns[i]) {
			ksnprintf(why, sizeof(why), "scratch register: wrote 0x%02x, read 0x%02x",
				  patterns[i], got);
			scenario_fail(ctx->name, why);
			return;
		}
	}
	struct deadline d;
	uint8_t lsr;
	deadline_start(&d, SERIAL_TEMT_TIMEOUT_US);
	while (((lsr = inb(COM1_PORT + COM1_LSR)) & (LSR_THRE | LSR_TEMT)) !=
	       (LSR_THRE | LSR_TEMT)) {
		if (deadline_expired(&d)) {
			ksnprintf(why, sizeof(why), "lsr=0x%02x lacks THRE|TEMT", lsr);
			scenario_fail(ctx->name, why);
			return;
		}
	}
	ksnprintf(why, sizeof(why), "lsr=0x%02x", lsr);
	scenario_pass(ctx->name, why);
}

static void run_e820(const struct ctx *ctx)
{
	const struct boot_info *info = ctx->info;
	uint64_t usable = e820_usable_bytes(info);
	char details[96];
	if (info->e820_count == 0 || usable == 0) {
		ksnprintf(details, sizeof(details), "no usable RAM in the e820 map (entries=%u)",
			  info->e820_count);
		scenario_fail(ctx->name, details);
		return;
	}
	ksnprintf(details, sizeof(details), "usable=%llu entries=%u%s", (unsigned long long)usable,
		  info->e820_count, info->e820_truncated ? " truncated" : "");
	scenario_pass(ctx->name, details);
	for (uint32_t i = 0; i < info->e820_count; i++) {
		const struct e820_entry *e = &info->e820[i];
		kprintf("e820: 0x%016llx 0x%016llx %u\n", (unsigned long long)e->addr,
			(unsigned long long)(e->addr + e->size), e->type);
	}
}

static void run_rtc(const struct ctx *ctx)
{
	struct rtc_time t;
	char text[160];
	if (!rtc_read(&t, text, sizeof(text))) {
		scenario_fail(ctx->name, text);
		return;
	}
	ksnprintf(text, sizeof(text), "%04u-%02u-%02u %02u:%02u:%02u", t.year, t.month, t.day,
		  t.hour, t.minute, t.second);
	scenario_pass(ctx->name, text);
}

static void run_smp(const struct ctx *ctx)
{
	const struct smp_result *r = smp_bring_up(ctx->info);
	char ids[4 * MAX_CPUS];
	char text[sizeof(ids) + 192];
	smp_format_ids(r, ",", ids, sizeof(ids));
	if (r->ok) {
		ksnprintf(text, sizeof(text), "cpus=%u/%u apic_ids=%s", r->online, r->expected, ids);
		scenario_pass(ctx->name, text);
	} else {
		ksnprintf(text, sizeof(text), "%s (cpus=%u/%u apic_ids=%s)", r->error, r->online,
			  r->expected, ids);
		scenario_fail(ctx->name, text);
	}
}

static void run_poweroff(const struct ctx *ctx)
{
	scenario_pass(ctx->name, "");
	power_off_or_halt();
}

static void clear_reset_marker(void)
{
	cmos_write(NVRAM_MARKER, 0);
	cmos_write(NVRAM_METHOD, 0);
	cmos_write(NVRAM_WORD, 0);
}

/* Fails the scenario when its word index does not fit in the marker. */
static bool marker_can_record(const struct ctx *ctx)
{
	char why[96];
	if (ctx->word_index <= MARKER_MAX_WORD)
		return true;
	ksnprintf(why, sizeof(why), "word %u is past the %u the reset marker can record",
		  ctx->word_index, MARKER_MAX_WORD);
	scenario_fail(ctx->name, why);
	return false;
}

static void write_marker(const struct ctx *ctx)
{
	/* Marker byte last, so that a half-written marker is never taken as valid. */
	cmos_write(NVRAM_METHOD, (uint8_t)ctx->reset_method);
	cmos_write(NVRAM_WORD, (uint8_t)ctx->word_index);
	cmos_write(NVRAM_MARKER, MARKER_VALUE);
}

static void run_reset(const struct ctx *ctx)
{
	const char *how = reset_method_name(ctx->reset_method);
	char why[96];
	if (!marker_can_record(ctx))
		return;
	if (ctx->reset_method == RESET_ACPI && !platform()->reset.present) {
		scenario_fail(ctx->name, "FADT has no reset register");
		return;
	}
	write_marker(ctx);
	kprintf("oxguest: resetting via %s\n", how);
	reset_machine(ctx->reset_method);
	clear_reset_marker();
	ksnprintf(why, sizeof(why), "reset via %s returned", how);
	scenario_fail(ctx->name, why);
}

static _Noreturn void execute_at(uintptr_t addr)
{
	__asm__ volatile("jmp *%0" : : "r"(addr) : "memory");
	__builtin_unreachable();
}

/*
 * Success is the VMM stopping the machine, so there is no PASS line. The marker turns a reboot
 * (e.g. a triple fault where KVM emulates the fetch differently) into a FAIL on the next boot
 * instead of a crash loop.
 */
static void run_crash(const struct ctx *ctx)
{
	if (!marker_can_record(ctx))
		return;
	write_marker(ctx);
	kprintf("oxguest: crashing on purpose\n");
	execute_at(CRASH_ADDR);
}

static void run_initrd(const struct ctx *ctx)
{
	check_initrd(ctx->name, ctx->info);
}

static void run_serial_echo(const struct ctx *ctx)
{
	echo_serial_line(ctx->name);
}

static void run_counter_scenario(const struct ctx *ctx)
{
	run_counter(ctx->name, ctx->info);
}

/*
 * Polls PM1_STS (no interrupt handler; the SCI stays masked in the IOAPIC) for PWRBTN_STS, as an
 * ACPI OS's power button driver would see it. A press before the scenario started counts too.
 * PWRBTN_EN is set as an OS would and put back on timeout.
 */
static void run_wait_shutdown(const struct ctx *ctx)
{
	char why[96];
	uint16_t enable = pm1_enable();
	pm1_set_enable(enable | PM1_PWRBTN);
	kprintf("oxguest: waiting for the power button\n");
	struct deadline d;
	deadline_start(&d, POWER_BUTTON_TIMEOUT_US);
	for (;;) {
		uint16_t status = pm1_status();
		if (status == FLOATING_BUS16) {
			ksnprintf(why, sizeof(why), "PM1_STS at port 0x%x reads 0xffff (no PM1 event block)",
				  platform()->pm1a_evt);
			break;
		}
		if (status & PM1_PWRBTN) {
			pm1_status_clear(PM1_PWRBTN);
			scenario_pass(ctx->name, "power button");
			power_off_or_halt();
		}
		if (deadline_expired(&d)) {
			ksnprintf(why, sizeof(why), "timeout");
			break;
		}
		delay_us(POWER_BUTTON_POLL_US);
	}
	pm1_set_enable(enable);
	scenario_fail(ctx->name, why);
}

static bool next_word(const char **cursor, char *word, bool *has_equals);

static bool has_word(const char *cmdline, const char *wanted)
{
	char word[WORD_MAX];
	bool has_equals;
	while (next_word(&cmdline, word, &has_equals)) {
		if (str_eq(word, wanted))
			return true;
	}
	return false;
}

static unsigned pci_scan_flags(const struct ctx *ctx)
{
	return (has_word(ctx->info->cmdline, PCI_PORTS_WORD) ? PCI_SCAN_PORTS : 0) |
	       (has_word(ctx->info->cmdline, PCI_REASSIGN_WORD) ? PCI_SCAN_REASSIGN : 0);
}

static void run_pci_scenario(const struct ctx *ctx)
{
	run_pci(ctx->name, pci_scan_flags(ctx));
}

static void run_virtio_rng_scenario(const struct ctx *ctx)
{
	run_virtio_rng(ctx->name, pci_scan_flags(ctx));
}

static void run_virtio_msix_scenario(const struct ctx *ctx)
{
	run_virtio_msix(ctx->name, pci_scan_flags(ctx));
}

static void run_balloon_scenario(const struct ctx *ctx)
{
	run_balloon(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_console_write_scenario(const struct ctx *ctx)
{
	run_console_write(ctx->name, pci_scan_flags(ctx));
}

static void run_console_echo_scenario(const struct ctx *ctx)
{
	run_console_echo(ctx->name, pci_scan_flags(ctx));
}

static void run_net_tx_scenario(const struct ctx *ctx)
{
	run_net_tx(ctx->name, pci_scan_flags(ctx));
}

static void run_net_rx_scenario(const struct ctx *ctx)
{
	run_net_rx(ctx->name, pci_scan_flags(ctx));
}

static void run_net_echo_scenario(const struct ctx *ctx)
{
	run_net_echo(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_net_bench_scenario(const struct ctx *ctx)
{
	run_net_bench(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_blk_info_scenario(const struct ctx *ctx)
{
	run_blk_info(ctx->name, pci_scan_flags(ctx));
}

static void run_blk_read_scenario(const struct ctx *ctx)
{
	run_blk_read(ctx->name, pci_scan_flags(ctx));
}

static void run_blk_snapshot_scenario(const struct ctx *ctx)
{
	run_blk_snapshot(ctx->name, pci_scan_flags(ctx));
}

static void run_blk_write_scenario(const struct ctx *ctx)
{
	run_blk_write(ctx->name, pci_scan_flags(ctx));
}

static void run_blk_ro_scenario(const struct ctx *ctx)
{
	run_blk_ro(ctx->name, pci_scan_flags(ctx));
}

static void run_blk_mixed_scenario(const struct ctx *ctx)
{
	run_blk_mixed(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_blk_discard_scenario(const struct ctx *ctx)
{
	run_blk_discard(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_blk_bench_seq_read_scenario(const struct ctx *ctx)
{
	run_blk_bench_seq_read(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_blk_bench_seq_write_scenario(const struct ctx *ctx)
{
	run_blk_bench_seq_write(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_blk_bench_rand_read_scenario(const struct ctx *ctx)
{
	run_blk_bench_rand_read(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_vsock_echo_scenario(const struct ctx *ctx)
{
	run_vsock_echo(ctx->name, ctx->info, pci_scan_flags(ctx));
}

static void run_vsock_connect_scenario(const struct ctx *ctx)
{
	run_vsock_connect(ctx->name, ctx->info->cmdline, pci_scan_flags(ctx));
}

static void run_demo(const struct ctx *ctx)
{
	const struct smp_result *r = smp_bring_up(ctx->info);
	char ids[4 * MAX_CPUS];
	char why[160];
	struct rtc_time t;
	smp_format_ids(r, ", ", ids, sizeof(ids));
	kprintf("oxvmm demo guest\n");
	kprintf("vCPUs online: %u (APIC IDs %s)\n", r->online, ids);
	if (!r->ok)
		kprintf("vCPU start-up problem: %s\n", r->error);
	kprintf("memory: %llu MiB usable\n", (unsigned long long)(e820_usable_bytes(ctx->info) >> 20));
	if (rtc_read(&t, why, sizeof(why)))
		kprintf("RTC: %04u-%02u-%02u %02u:%02u:%02u UTC\n", t.year, t.month, t.day, t.hour,
			t.minute, t.second);
	else
		kprintf("RTC: unreadable (%s)\n", why);
	kprintf("command line: %s\n", ctx->info->cmdline);
	kprintf("oxguest: done\n");
	power_off_or_halt();
}

static const struct scenario scenarios[] = {
	{"serial", run_serial, 0},
	{"e820", run_e820, 0},
	{"rtc", run_rtc, 0},
	{"smp", run_smp, 0},
	{"poweroff", run_poweroff, 0},
	{"reset", run_reset, RESET_I8042},
	{"reset-acpi", run_reset, RESET_ACPI},
	{"reset-triple", run_reset, RESET_TRIPLE_FAULT},
	{"crash", run_crash, MARKER_CRASH},
	{"initrd", run_initrd, 0},
	{"serial-echo", run_serial_echo, 0},
	{"counter", run_counter_scenario, 0},
	{"wait-shutdown", run_wait_shutdown, 0},
	{"pci", run_pci_scenario, 0},
	{"virtio-rng", run_virtio_rng_scenario, 0},
	{"virtio-msix", run_virtio_msix_scenario, 0},
	{"balloon", run_balloon_scenario, 0},
	{"console-write", run_console_write_scenario, 0},
	{"console-echo", run_console_echo_scenario, 0},
	{"net-tx", run_net_tx_scenario, 0},
	{"net-rx", run_net_rx_scenario, 0},
	{"net-echo", run_net_echo_scenario, 0},
	{"net-bench", run_net_bench_scenario, 0},
	{"blk-info", run_blk_info_scenario, 0},
	{"blk-read", run_blk_read_scenario, 0},
	{"blk-snapshot", run_blk_snapshot_scenario, 0},
	{"blk-write", run_blk_write_scenario, 0},
	{"blk-ro", run_blk_ro_scenario, 0},
	{"blk-mixed", run_blk_mixed_scenario, 0},
	{"blk-discard", run_blk_discard_scenario, 0},
	{"blk-bench-seq-read", run_blk_bench_seq_read_scenario, 0},
	{"blk-bench-seq-write", run_blk_bench_seq_write_scenario, 0},
	{"blk-bench-rand-read", run_blk_bench_rand_read_scenario, 0},
	{"vsock-echo", run_vsock_echo_scenario, 0},
	{"vsock-connect", run_vsock_connect_scenario, 0},
	{"demo", run_demo, 0},
};

static const struct scenario *find_scenario(const char *word)
{
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		if (str_eq(scenarios[i].name, word))
			return &scenarios[i];
	}
	return NULL;
}

/*
 * Copies the next word at *cursor into word (truncated to WORD_MAX - 1 bytes) and advances
 * the cursor. Returns false at the end of the string.
 */
static bool next_word(const char **cursor, char *word, bool *has_equals)
{
	const char *p = *cursor;
	while (is_space(*p))
		p++;
	if (*p == '\0')
		return false;
	size_t len = 0;
	*has_equals = false;
	for (; *p != '\0' && !is_space(*p); p++) {
		if (*p == '=')
			*has_equals = true;
		if (len + 1 < WORD_MAX)
			word[len++] = *p;
	}
	word[len] = '\0';
	*cursor = p;
	return true;
}

/* Word number index of the command line (counting every word), or false when absent. */
static bool word_at(const char *cmdline, uint32_t index, char *word)
{
	bool has_equals;
	for (uint32_t i = 0; next_word(&cmdline, word, &has_equals); i++) {
		if (i == index)
			return true;
	}
	return false;
}

/*
 * After a reset scenario rebooted the machine: clears the marker, reports the PASS and returns
 * the word index to resume after. Returns -1 when there is no (valid) marker.
 */
static int take_reset_marker(const struct boot_info *info)
{
	if (cmos_read(NVRAM_MARKER) != MARKER_VALUE)
		return -1;
	uint8_t method = cmos_read(NVRAM_METHOD);
	uint8_t index = cmos_read(NVRAM_WORD);
	clear_reset_marker();
	char word[WORD_MAX];
	const struct scenario *s = word_at(info->cmdline, index, word) ? find_scenario(word) : NULL;
	if (s == NULL || s->reset_method == 0 || s->reset_method != method) {
		kprintf("oxguest: ignoring stale reset marker (method %u, word %u)\n", method, index);
		return -1;
	}
	if (method == MARKER_CRASH) {
		scenario_fail(s->name, "the machine rebooted instead of stopping");
		return index;
	}
	kprintf("TEST %s PASS rebooted via %s\n", s->name, reset_method_name(method));
	return index;
}

void scenarios_run(const struct boot_info *info)
{
	int resume_after = take_reset_marker(info);
	const char *cursor = info->cmdline;
	char word[WORD_MAX];
	bool has_equals;
	bool any = false;
	for (uint32_t index = 0; next_word(&cursor, word, &has_equals); index++) {
		if (has_equals)
			continue;
		any = true;
		if ((int64_t)index <= resume_after)
			continue;
		const struct scenario *s = find_scenario(word);
		if (s == NULL) {
			scenario_fail(word, "unknown scenario");
			continue;
		}
		struct ctx ctx = {info, s->name, index, s->reset_method};
		s->run(&ctx);
	}
	if (!any) {
		struct ctx ctx = {info, "demo", 0, 0};
		run_demo(&ctx);
	}
}
