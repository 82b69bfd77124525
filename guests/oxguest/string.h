/* The few string and memory helpers the guest needs (no libc). */
#ifndef OXGUEST_STRING_H
#define OXGUEST_STRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The compiler may emit calls to these four; they are also used directly. */
void *memcpy(void *dest, const void *src, size_t n);
void *memmove(void *dest, const void *src, size_t n);
void *memset(void *dest, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

size_t strlen(const char *s);
bool str_eq(const char *a, const char *b);
/* True when the first n bytes of s contain byte c. */
bool mem_contains(const char *s, size_t n, char c);

/* Unaligned little-endian loads from guest-physical memory or tables. */
static inline uint16_t load_u16(const void *p)
{
	uint16_t v;
	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint32_t load_u32(const void *p)
{
	uint32_t v;
	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint64_t load_u64(const void *p)
{
	uint64_t v;
	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

#endif
