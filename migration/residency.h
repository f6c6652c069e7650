/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

/* Which pages of a private anonymous mapping (guest RAM) hold data the guest may have
 * written: a page that is present or swapped out, from /proc/self/pagemap (bit 63
 * present, bit 62 swapped). mincore() is not enough: on some kernels (Debian 12's 6.1) it
 * reports a page that was swapped out and has left the swap cache as not resident, and a
 * migration that skips it loses the guest's data (docs/migration.md).
 *
 * Sets bit 0 of ret_vec[p] for each such page p of [base, base + size) (one byte per
 * 4 KiB page, as mincore() does) and clears it for the others. 'base' and 'size' are
 * page aligned. Returns the number of such pages, or a negative errno. */
int64_t ram_residency(const void *base, uint64_t size, unsigned char *ret_vec);
