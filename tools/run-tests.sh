#!/usr/bin/env bash
# The whole test suite, as README.md gives it: installs what is missing, then builds and
# runs every test (tools/run-tests.py: the plain build, ASan+UBSan, TSan and the fuzzers;
# each test routed to this host or to the nested VM of tests/nested/ by what this host's
# KVM can do). It ends with one line, "N passed, N failed, N skipped", and any flaky
# test named below it.
#
#   tools/run-tests.sh [BUILDDIR]        (default: build; the sanitizer builds go
#                                         to BUILDDIR-asan, -tsan and -fuzz)
#
# Environment: see tools/run-tests.py (VMMD_NESTED=auto|always|never, VMMD_ALLOW_SKIP,
# VMMD_TEST_PARTS, VMMD_FUZZ_SECONDS, VMMD_NESTED_TIMEOUT, MESON_TEST_ARGS).
set -euo pipefail

cd "$(dirname "$0")/.."
bash tools/install-deps.sh
exec /usr/bin/python3 tools/run-tests.py "$@"
