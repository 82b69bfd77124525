/*
 * COM1 console and a small printf.
 *
 * Output protocol: scenario results are single lines "TEST <name> PASS <details>" or
 * "TEST <name> FAIL <reason>"; every other line must not start with "TEST ". Lines end in "\n"
 * only. APs never print, so lines are never interleaved.
 */
#ifndef OXGUEST_CONSOLE_H
#define OXGUEST_CONSOLE_H

#include <stdarg.h>
#include <stdint.h>

#define COM1_THR 0 /* transmit holding register */
#define COM1_IER 1
#define COM1_FCR 2
#define COM1_LCR 3
#define COM1_MCR 4
#define COM1_LSR 5
#define COM1_SCR 7
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

/* 8N1, FIFO on, no interrupts. Does not touch the divisor (VMM UARTs ignore the baud rate). */
void console_init(void);
void console_putc(char c);
void console_puts(const char *s);
/* Ends the current line with '\n' unless the console is at the start of a line. */
void console_end_line(void);

/*
 * printf subset: %s %c %d %i %u %x %X %p %%, length modifiers l, ll, z, flags '0' and '-',
 * a field width. Unknown conversions are printed literally.
 */
__attribute__((format(printf, 1, 2))) void kprintf(const char *fmt, ...);
void kvprintf(const char *fmt, va_list args);

/* Formats into buf (always NUL-terminated when size > 0), truncating. Returns bytes written. */
__attribute__((format(printf, 3, 4))) int ksnprintf(char *buf, int size, const char *fmt, ...);
int kvsnprintf(char *buf, int size, const char *fmt, va_list args);

#endif
