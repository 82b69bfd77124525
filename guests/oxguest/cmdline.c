/* Reading the kernel command line (see cmdline.h). */
#include "cmdline.h"

bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

enum cmdline_option cmdline_u64(const char *cmdline, const char *key, uint64_t max, uint64_t *out,
				const char **value_text)
{
	const char *p = cmdline;
	for (;;) {
		while (is_space(*p))
			p++;
		if (*p == '\0')
			return OPTION_ABSENT;
		const char *k = key;
		while (*k != '\0' && *p == *k) {
			p++;
			k++;
		}
		if (*k == '\0' && *p == '=') {
			uint64_t value = 0;
			int digits = 0;
			if (value_text != 0)
				*value_text = p + 1;
			for (p++; *p >= '0' && *p <= '9' && value <= max; p++, digits++)
				value = value * 10 + (uint64_t)(*p - '0');
			*out = value;
			bool valid = digits > 0 && value <= max && (*p == '\0' || is_space(*p));
			return valid ? OPTION_SET : OPTION_INVALID;
		}
		while (*p != '\0' && !is_space(*p))
			p++;
	}
}
