// SPDX-License-Identifier: GPL-2.0
/*
 * KUNIT_FAIL() is a macro: wrap it for the Rust suite in vscsi_kunit.rs.
 */

#include <kunit/test.h>

void vscsi_kunit_fail(struct kunit *test, unsigned int line, const char *expr, size_t len);

void vscsi_kunit_fail(struct kunit *test, unsigned int line, const char *expr, size_t len)
{
	KUNIT_FAIL(test, "protocol.rs:%u: check failed: %.*s", line, (int)len, expr);
}
