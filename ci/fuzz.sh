#!/usr/bin/env bash
# A long local fuzz run: ci/fuzz-smoke.sh without its 30 s cap, WEDGE_FUZZ_SECONDS per target
# (default 600, the issue's bar). Same build, same fresh corpus copies under target/fuzz-smoke/,
# same failure rules; targets may be named as arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
export WEDGE_FUZZ_SECONDS="${WEDGE_FUZZ_SECONDS:-600}" WEDGE_FUZZ_UNCAPPED=1
exec ./ci/fuzz-smoke.sh "$@"
