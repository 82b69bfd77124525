#include "cmos.h"

#include "console.h"
#include "io.h"
#include "string.h"
#include "timer.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71

#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_DAY 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_STATUS_A 0x0A
#define RTC_STATUS_B 0x0B
#define RTC_CENTURY 0x32

#define STATUS_A_UIP 0x80
#define STATUS_B_24H 0x02
#define STATUS_B_BINARY 0x04
#define HOUR_PM 0x80

/* An update cycle takes under 2 ms; allow generous slack under emulation. */
#define UIP_TIMEOUT_US 20000
#define READ_ATTEMPTS 5

struct rtc_raw {
	uint8_t second, minute, hour, day, month, year, century;
};

uint8_t cmos_read(uint8_t index)
{
	outb(CMOS_INDEX, index);
	return inb(CMOS_DATA);
}

void cmos_write(uint8_t index, uint8_t value)
{
	outb(CMOS_INDEX, index);
	outb(CMOS_DATA, value);
}

static bool wait_update_done(void)
{
	struct deadline d;
	deadline_start(&d, UIP_TIMEOUT_US);
	while (cmos_read(RTC_STATUS_A) & STATUS_A_UIP) {
		if (deadline_expired(&d))
			return false;
	}
	return true;
}

static void read_raw(struct rtc_raw *raw)
{
	raw->second = cmos_read(RTC_SECONDS);
	raw->minute = cmos_read(RTC_MINUTES);
	raw->hour = cmos_read(RTC_HOURS);
	raw->day = cmos_read(RTC_DAY);
	raw->month = cmos_read(RTC_MONTH);
	raw->year = cmos_read(RTC_YEAR);
	raw->century = cmos_read(RTC_CENTURY);
}

static bool raw_equal(const struct rtc_raw *a, const struct rtc_raw *b)
{
	return a->second == b->second && a->minute == b->minute && a->hour == b->hour &&
	       a->day == b->day && a->month == b->month && a->year == b->year &&
	       a->century == b->century;
}

/* Decodes one register; false when BCD digits are out of range. */
static bool decode(uint8_t value, bool binary, uint32_t *out)
{
	if (binary) {
		*out = value;
		return true;
	}
	uint8_t hi = value >> 4;
	uint8_t lo = value & 0xF;
	if (hi > 9 || lo > 9)
		return false;
	*out = hi * 10u + lo;
	return true;
}

static bool decode_hour(uint8_t raw, uint8_t status_b, uint32_t *hour)
{
	bool twelve_hour = !(status_b & STATUS_B_24H);
	bool pm = twelve_hour && (raw & HOUR_PM);
	if (twelve_hour)
		raw &= (uint8_t)~HOUR_PM;
	if (!decode(raw, status_b & STATUS_B_BINARY, hour))
		return false;
	if (twelve_hour) {
		if (*hour < 1 || *hour > 12)
			return false;
		*hour %= 12; /* 12 AM is 0, 12 PM is 12 */
		if (pm)
			*hour += 12;
	}
	return true;
}

static bool read_stable(struct rtc_raw *raw)
{
	struct rtc_raw again;
	if (!wait_update_done())
		return false;
	read_raw(raw);
	for (int i = 0; i < READ_ATTEMPTS; i++) {
		if (!wait_update_done())
			return false;
		read_raw(&again);
		if (raw_equal(raw, &again))
			return true;
		*raw = again;
	}
	return false;
}

static bool in_range(const struct rtc_time *t)
{
	return t->second <= 59 && t->minute <= 59 && t->hour <= 23 && t->day >= 1 &&
	       t->day <= 31 && t->month >= 1 && t->month <= 12 && t->year >= 1900 &&
	       t->year <= 9999;
}

bool rtc_read(struct rtc_time *out, char *why, int why_size)
{
	struct rtc_raw raw;
	if (!read_stable(&raw)) {
		ksnprintf(why, why_size, "no stable reading (update-in-progress stuck or changing)");
		return false;
	}
	uint8_t status_b = cmos_read(RTC_STATUS_B);
	bool binary = status_b & STATUS_B_BINARY;
	uint32_t year = 0, century = 20;
	bool ok = decode(raw.second, binary, &out->second) &&
		  decode(raw.minute, binary, &out->minute) &&
		  decode_hour(raw.hour, status_b, &out->hour) && decode(raw.day, binary, &out->day) &&
		  decode(raw.month, binary, &out->month) && decode(raw.year, binary, &year) &&
		  (raw.century == 0 || decode(raw.century, binary, &century));
	out->year = century * 100 + year;
	if (!ok || year > 99 || !in_range(out)) {
		ksnprintf(why, why_size,
			  "out of range: raw sec=0x%02x min=0x%02x hour=0x%02x day=0x%02x "
			  "mon=0x%02x year=0x%02x century=0x%02x status_b=0x%02x",
			  raw.second, raw.minute, raw.hour, raw.day, raw.month, raw.year,
			  raw.century, status_b);
		return false;
	}
	return true;
}
