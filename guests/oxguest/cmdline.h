/* Reading the kernel command line: words and "<key>=<number>" options. */
#ifndef OXGUEST_CMDLINE_H
#define OXGUEST_CMDLINE_H

#include <stdbool.h>
#include <stdint.h>

enum cmdline_option {
	OPTION_ABSENT,
	OPTION_SET,
	OPTION_INVALID,
};

/* Word separators of the command line. */
bool is_space(char c);

/*
 * Finds the first word "<key>=<value>" and parses value as a decimal number of at most max
 * (into *out). OPTION_INVALID when the value is empty, not all digits, or above max; then, if
 * value_text is not NULL, it points at the value as given (up to the next space or the end).
 */
enum cmdline_option cmdline_u64(const char *cmdline, const char *key, uint64_t max, uint64_t *out,
				const char **value_text);

#endif
