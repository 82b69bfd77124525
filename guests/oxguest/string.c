#include "string.h"

void *memcpy(void *dest, const void *src, size_t n)
{
	unsigned char *d = dest;
	const unsigned char *s = src;
	/* rep movsb: one instruction, so cheap under instruction emulation too. */
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return dest;
}

void *memmove(void *dest, const void *src, size_t n)
{
	unsigned char *d = dest;
	const unsigned char *s = src;
	if (d <= s || d >= s + n)
		return memcpy(dest, src, n);
	while (n > 0) {
		n--;
		d[n] = s[n];
	}
	return dest;
}

void *memset(void *dest, int c, size_t n)
{
	unsigned char *d = dest;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dest;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a;
	const unsigned char *y = b;
	for (size_t i = 0; i < n; i++) {
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	}
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n] != '\0')
		n++;
	return n;
}

bool str_eq(const char *a, const char *b)
{
	while (*a != '\0' && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

bool mem_contains(const char *s, size_t n, char c)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == c)
			return true;
	}
	return false;
}
