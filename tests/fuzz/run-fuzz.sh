#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# run-fuzz.sh TARGET CORPUS_DIR [libFuzzer options]: runs TARGET over a scratch copy of its
# seed corpus (libFuzzer writes new inputs into its first corpus directory; the seeds in
# the source tree stay as they are). A missing corpus directory is an empty one.
set -eu
target=$1 corpus=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -d "$corpus" ]; then
        cp -r "$corpus"/. "$work"/
fi
"$target" "$@" "$work"
