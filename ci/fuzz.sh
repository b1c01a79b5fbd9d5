#!/usr/bin/env bash
# Runs every fuzz target for a bounded time with cargo-fuzz on the nightly toolchain (libFuzzer
# needs it). WEDGE_FUZZ_SECONDS per target, default 30. A crash fails the script and leaves the
# input under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${WEDGE_FUZZ_SECONDS:-30}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target" "seeds/$target"
  echo "== fuzz $target for ${seconds}s" >&2
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds"
done
