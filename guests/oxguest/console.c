#include "console.h"

#include <stdbool.h>

#include "io.h"
#include "layout.h"
#include "string.h"

/* Bounded poll for THRE at the start of each line; VMM UARTs report it set at once. */
#define THRE_POLL_LIMIT 100000

/* Where formatted characters go: the console or a buffer. */
struct sink {
	char *buf; /* NULL: console */
	int size;
	int len;
};

static bool at_line_start = true;

void console_init(void)
{
	outb(COM1_PORT + COM1_IER, 0x00);
	outb(COM1_PORT + COM1_LCR, 0x03);
	outb(COM1_PORT + COM1_FCR, 0x01);
	outb(COM1_PORT + COM1_MCR, 0x03);
}

static void wait_transmitter_ready(void)
{
	for (int i = 0; i < THRE_POLL_LIMIT; i++) {
		if (inb(COM1_PORT + COM1_LSR) & LSR_THRE)
			return;
	}
}

void console_putc(char c)
{
	if (at_line_start)
		wait_transmitter_ready();
	outb(COM1_PORT + COM1_THR, (uint8_t)c);
	at_line_start = c == '\n';
}

void console_puts(const char *s)
{
	while (*s != '\0')
		console_putc(*s++);
}

void console_end_line(void)
{
	if (!at_line_start)
		console_putc('\n');
}

static void sink_put(struct sink *sink, char c)
{
	if (sink->buf == NULL) {
		console_putc(c);
		return;
	}
	if (sink->len + 1 < sink->size)
		sink->buf[sink->len++] = c;
}

static void sink_pad(struct sink *sink, char c, int count)
{
	for (int i = 0; i < count; i++)
		sink_put(sink, c);
}

struct spec {
	bool zero_pad;
	bool left;
	int width;
	int longs; /* number of 'l'/'z' modifiers, 0..2 */
};

static void put_field(struct sink *sink, const struct spec *spec, const char *text, int len)
{
	int pad = spec->width > len ? spec->width - len : 0;
	if (!spec->left)
		sink_pad(sink, spec->zero_pad ? '0' : ' ', pad);
	for (int i = 0; i < len; i++)
		sink_put(sink, text[i]);
	if (spec->left)
		sink_pad(sink, ' ', pad);
}

static void put_number(struct sink *sink, const struct spec *spec, uint64_t value, unsigned base,
		       bool negative, bool upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char text[24];
	int pos = sizeof(text);
	do {
		/* base is 10 or 16: the compiler turns both into shifts/multiplies per branch. */
		unsigned digit;
		if (base == 16) {
			digit = value & 0xF;
			value >>= 4;
		} else {
			digit = value % 10;
			value /= 10;
		}
		text[--pos] = digits[digit];
	} while (value != 0);
	if (negative) {
		if (spec->zero_pad && spec->width > 0) {
			struct spec rest = *spec;
			sink_put(sink, '-');
			rest.width = spec->width - 1;
			put_field(sink, &rest, &text[pos], (int)sizeof(text) - pos);
			return;
		}
		text[--pos] = '-';
	}
	put_field(sink, spec, &text[pos], (int)sizeof(text) - pos);
}

static uint64_t take_unsigned(va_list *args, int longs)
{
	if (longs >= 2)
		return va_arg(*args, unsigned long long);
	if (longs == 1)
		return va_arg(*args, unsigned long);
	return va_arg(*args, unsigned int);
}

static int64_t take_signed(va_list *args, int longs)
{
	if (longs >= 2)
		return va_arg(*args, long long);
	if (longs == 1)
		return va_arg(*args, long);
	return va_arg(*args, int);
}

/* Parses flags, width and length at *fmt (just after '%'), advancing it. */
static struct spec parse_spec(const char **fmt)
{
	struct spec spec = {false, false, 0, 0};
	const char *p = *fmt;
	for (;; p++) {
		if (*p == '0')
			spec.zero_pad = true;
		else if (*p == '-')
			spec.left = true;
		else
			break;
	}
	while (*p >= '0' && *p <= '9' && spec.width < 1000)
		spec.width = spec.width * 10 + (*p++ - '0');
	while ((*p == 'l' || *p == 'z') && spec.longs < 2) {
		spec.longs++;
		p++;
	}
	*fmt = p;
	return spec;
}

static void format(struct sink *sink, const char *fmt, va_list *args)
{
	while (*fmt != '\0') {
		if (*fmt != '%') {
			sink_put(sink, *fmt++);
			continue;
		}
		fmt++;
		struct spec spec = parse_spec(&fmt);
		char conv = *fmt;
		if (conv == '\0')
			break;
		fmt++;
		switch (conv) {
		case 's': {
			const char *s = va_arg(*args, const char *);
			if (s == NULL)
				s = "(null)";
			put_field(sink, &spec, s, (int)strlen(s));
			break;
		}
		case 'c': {
			char c = (char)va_arg(*args, int);
			put_field(sink, &spec, &c, 1);
			break;
		}
		case 'd':
		case 'i': {
			int64_t v = take_signed(args, spec.longs);
			uint64_t magnitude = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
			put_number(sink, &spec, magnitude, 10, v < 0, false);
			break;
		}
		case 'u':
			put_number(sink, &spec, take_unsigned(args, spec.longs), 10, false, false);
			break;
		case 'x':
		case 'X':
			put_number(sink, &spec, take_unsigned(args, spec.longs), 16, false, conv == 'X');
			break;
		case 'p':
			sink_put(sink, '0');
			sink_put(sink, 'x');
			put_number(sink, &spec, (uintptr_t)va_arg(*args, void *), 16, false, false);
			break;
		case '%':
			sink_put(sink, '%');
			break;
		default:
			sink_put(sink, '%');
			sink_put(sink, conv);
			break;
		}
	}
}

void kvprintf(const char *fmt, va_list args)
{
	struct sink sink = {NULL, 0, 0};
	va_list copy;
	va_copy(copy, args);
	format(&sink, fmt, &copy);
	va_end(copy);
}

void kprintf(const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	kvprintf(fmt, args);
	va_end(args);
}

int kvsnprintf(char *buf, int size, const char *fmt, va_list args)
{
	struct sink sink = {buf, size, 0};
	va_list copy;
	va_copy(copy, args);
	format(&sink, fmt, &copy);
	va_end(copy);
	if (size > 0)
		buf[sink.len] = '\0';
	return sink.len;
}

int ksnprintf(char *buf, int size, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	int len = kvsnprintf(buf, size, fmt, args);
	va_end(args);
	return len;
}
