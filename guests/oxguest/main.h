/* The common C entry, reached from both boot paths through bootinfo.c. */
#ifndef OXGUEST_MAIN_H
#define OXGUEST_MAIN_H

#include "bootinfo.h"

_Noreturn void main(const struct boot_info *info);

#endif
