#!/usr/bin/env bash
# The fuzz smoke: builds every cargo-fuzz target in fuzz/ (nightly, release, debug assertions,
# AddressSanitizer) and runs each for a bounded time from a COPY of its committed corpus
# (fuzz/corpus/TARGET/ -> target/fuzz-smoke/corpus/TARGET/), so the targets cannot rot unnoticed
# and the committed corpus stays small. Fails if any target crashes, hangs (-timeout), leaks or
# outgrows its memory (-rss_limit_mb); the failing input is kept under target/fuzz-smoke/TARGET/.
# Prints, per target, libFuzzer's final executions, exec/s and coverage (cov: edges, ft: features).
#
# `--build-only` builds the targets and stops.
# WEDGE_FUZZ_SECONDS: seconds per target (default 20; at most 30, unless WEDGE_FUZZ_UNCAPPED=1,
# which ci/fuzz.sh sets for long local runs). Targets to run may be named as arguments.
# Without nightly, or without cargo-fuzz when it cannot be installed (offline), it says that it
# skipped and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

seconds="${WEDGE_FUZZ_SECONDS:-20}"
if [[ "${WEDGE_FUZZ_UNCAPPED:-0}" != 1 && "$seconds" -gt 30 ]]; then
  echo "fuzz-smoke: WEDGE_FUZZ_SECONDS=$seconds is more than the smoke's 30 s; using 30" >&2
  seconds=30
fi
out="$root/target/fuzz-smoke"
build_dir="$root/target/fuzz"

skip() {
  echo "fuzz-smoke: SKIPPED (not a failure): $*" >&2
  exit 0
}
cargo +nightly --version >/dev/null 2>&1 ||
  skip "no nightly toolchain (libFuzzer needs it: rustup toolchain install nightly)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: cargo-fuzz is missing; installing it" >&2
  cargo install cargo-fuzz --locked ||
    skip "cargo-fuzz is missing and could not be installed (offline?)"
fi

echo "== fuzz-smoke: building the targets" >&2
cargo +nightly fuzz build --fuzz-dir fuzz -O --debug-assertions --target-dir "$build_dir"
if [[ "${1:-}" == "--build-only" ]]; then
  exit 0
fi
bin="$build_dir/x86_64-unknown-linux-gnu/release"

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

# One target: fresh copy of the corpus, bounded run, final stats. Returns libFuzzer's status.
run_target() {
  local target="$1" dir="$out/$1" corpus="$out/corpus/$1"
  rm -rf "$dir" "$corpus"
  mkdir -p "$dir" "$corpus"
  if [[ -d "fuzz/corpus/$target" ]]; then
    cp -R "fuzz/corpus/$target/." "$corpus/"
  fi
  # -timeout: one input running this long is a hang. -rss_limit_mb: the memory a target may
  # reach (ASan's own overhead included). Leak detection is on with ASan.
  "$bin/$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$dir/" >"$dir/log" 2>&1
}

# execs, exec/s and the last coverage line's cov:/ft: from a libFuzzer log.
summary() {
  local log="$1"
  local execs rate cov ft
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
  printf '%-16s execs %10s  exec/s %7s  cov %6s  ft %6s\n' \
    "$2" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}"
}

failed=()
for target in "${targets[@]}"; do
  echo "== fuzz-smoke: $target for ${seconds}s" >&2
  if run_target "$target"; then
    summary "$out/$target/log" "$target"
  else
    summary "$out/$target/log" "$target FAILED"
    grep -m1 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' \
      "$out/$target/log" >&2 || true
    echo "   log and input: $out/$target/" >&2
    failed+=("$target")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz-smoke: FAILED: ${failed[*]} (reproduce: $bin/TARGET INPUT)" >&2
  exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets ran ${seconds}s each without a finding" >&2
