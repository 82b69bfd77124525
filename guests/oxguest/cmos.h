/* CMOS RTC and NVRAM (ports 0x70/0x71). */
#ifndef OXGUEST_CMOS_H
#define OXGUEST_CMOS_H

#include <stdbool.h>
#include <stdint.h>

struct rtc_time {
	uint32_t year;
	uint32_t month;
	uint32_t day;
	uint32_t hour;
	uint32_t minute;
	uint32_t second;
};

uint8_t cmos_read(uint8_t index);
void cmos_write(uint8_t index, uint8_t value);

/*
 * Reads the RTC the safe way (UIP wait, repeat until two reads agree), decodes BCD/binary and
 * 12/24-hour mode and range-checks the result. On failure returns false with a reason in why.
 */
bool rtc_read(struct rtc_time *out, char *why, int why_size);

#endif
