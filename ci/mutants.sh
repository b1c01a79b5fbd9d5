#!/usr/bin/env bash
# Curated mutation testing: each named mutation (runtime/core/src/mutation.rs) reverts one fix of the
# runtime; the checks listed for it below must fail with it and pass without it. One build: the
# normal `--workspace --all-features` release build of ci/test.sh, which has the `mutations` feature
# compiled in (inert until WEDGE_MUTATION names one), so nothing is built twice; mutations are
# chosen at run time with WEDGE_MUTATION. Prints `mutation | caught by | killed/survived` and exits 1 if any mutation
# survives, or if a check fails with no mutation at all (a check that always fails kills nothing).
#
#   ci/mutants.sh [--table FILE]   (FILE: also write the table there, as markdown)
set -euo pipefail
cd "$(dirname "$0")/.."

table_out=""
if [[ "${1:-}" == "--table" ]]; then table_out="$2"; fi

export CARGO_TERM_COLOR=never
target="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target/release"
# Every check has its own limit: a mutation that deadlocks a check must count as caught, not hang.
# Runtime tests finish in seconds; scenario cells may wait out a deadline.
# Most mutations are caught by a check that hangs until this limit, so it is most of the script's
# time: the runtime tests pass in about 2 s (the baseline below holds them to the same limit).
test_limit="${WEDGE_MUTANT_TEST_LIMIT:-15}"
scenario_limit="${WEDGE_MUTANT_LIMIT:-90}"
logs="$target/mutants-logs"
rm -rf "$logs" && mkdir -p "$logs"

echo "== the release build with every feature (a no-op after ci/test.sh's own)" >&2
cargo build --release --workspace --all-features --bins -q
# The test executables, by name, exactly as `cargo test --workspace --all-features` built them:
# running them directly avoids a cargo build with another feature selection.
declare -A test_exe=() test_dir=()
while IFS=$'\t' read -r name exe dir; do
  test_exe[$name]="$exe"
  test_dir[$name]="$dir"
done < <(cargo test --release --workspace --all-features --no-run --message-format=json -q 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        dir = m["manifest_path"].rsplit("/", 1)[0]
        print(m["target"]["name"] + "\t" + m["executable"] + "\t" + dir)
')

# Each runtime test runs in a cgroup of its own (cgroup2), emptied with SIGKILL when it ends: a
# mutated test killed at its limit does not get to stop the wedge-run children it started, which
# would otherwise outlive this script (seen: a shell spinning in `wait`, one stopped on a pty).
# Without a writable cgroup2 hierarchy, its session is killed instead.
cg_root=""
for d in /sys/fs/cgroup /sys/fs/cgroup/unified; do
  if [[ "$(stat -fc %T "$d" 2>/dev/null)" == cgroup2fs ]] && mkdir -p "$d/wedge-mutants-$$" 2>/dev/null; then
    cg_root="$d/wedge-mutants-$$"
    break
  fi
done
checks_run=0

# Kills every process of cgroup $1 and removes it (waiting up to 5 s for them to go).
empty_cgroup() {
  local cg="$1" end=$((SECONDS + 5)) pid
  # (cgroup files always show size 0: read them.)
  while [[ -n "$(cat "$cg/cgroup.procs" 2>/dev/null)" && $SECONDS -lt $end ]]; do
    if [[ -f "$cg/cgroup.kill" ]]; then
      echo 1 >"$cg/cgroup.kill"
    else
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$cg/cgroup.procs"
    fi
    sleep 0.05
  done
  rmdir "$cg" 2>/dev/null || echo "mutants: could not remove $cg (still in use)" >&2
}
cleanup_cgroups() {
  [[ -n "$cg_root" && -d "$cg_root" ]] || return 0
  local cg
  for cg in "$cg_root"/*/; do [[ -d "$cg" ]] && empty_cgroup "${cg%/}"; done
  rmdir "$cg_root" 2>/dev/null || true
}
trap cleanup_cgroups EXIT

# Runs "$@" (a command) with everything it starts contained, and kills what is left afterwards.
contained() {
  local status=0
  checks_run=$((checks_run + 1))
  if [[ -n "$cg_root" ]]; then
    local cg="$cg_root/check-$checks_run"
    mkdir "$cg"
    bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' contained "$cg" "$@" || status=$?
    empty_cgroup "$cg"
  else
    local pid
    setsid "$@" &
    pid=$!
    wait "$pid" || status=$?
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  return "$status"
}

# A check is "kind:arg:filters". test:T:NAMES runs runtime test T filtered to NAMES (exact names,
# space-separated); scenario:FILE:CELLS runs `wedge run --gate` on FILE with --cell CELLS.
run_check() {
  local check="$1" log="$2" kind rest target filters
  kind="${check%%:*}"; rest="${check#*:}"; target="${rest%%:*}"; filters="${rest#*:}"
  case "$kind" in
    test)
      # shellcheck disable=SC2086
      [[ -n "${test_exe[$target]:-}" ]] || { echo "no test executable $target" >"$log"; return 1; }
      # Run where cargo test runs it: in its package's directory.
      contained env -C "${test_dir[$target]}" timeout --kill-after=10 "$test_limit" \
        "${test_exe[$target]}" --exact --test-threads 2 $filters >"$log" 2>&1
      ;;
    scenario)
      local cells=() c
      for c in $filters; do cells+=(--cell "$c"); done
      rm -rf "$log.results"
      # Two trials, run side by side: a mutation that hangs a cell costs one deadline, not
      # three; a rate-gated cell still runs its 20.
      timeout --kill-after=10 "$scenario_limit" "$bin/wedge" run -q --gate --jobs 2 --trials "${TRIALS:-2}" \
        --out "$log.results" "${cells[@]}" "scenarios/$target.toml" >"$log" 2>&1
      ;;
  esac
}

# mutation => checks (separated by ';')
declare -A checks=(
  [eventfd-wake]="test:supervise_loops:a_wake_reaches_a_supervisor_blocked_in_ppoll_even_when_the_flag_check_is_missed;scenario:close-doesnt-wake:variant=fixed kernel=host;test:wedge_run:the_fixed_supervisor_stops_on_request_with_its_listener_open"
  [begin-idempotence]="test:supervise_loops:begin_is_idempotent concurrent_begins_raise_the_wake_exactly_once"
  [bounded-drain]="test:supervise_loops:the_drain_is_bounded drain_wait_expires_when_the_supervisor_never_finishes"
  [listener-handback]="test:wedge_run:the_fixed_supervisor_stops_on_request_with_its_listener_open"
  [signal-escalation]="test:wedge_run:a_second_sigint_kills_the_sandbox_and_sigwinch_never_counts;scenario:signal-escalation:sandbox=none sigints=2"
  [caller-pgrp]="test:wedge_run_terminal:a_command_reading_the_terminal_is_not_stopped;scenario:terminal-foreground:sandbox=none"
  [pdeathsig-thread]="test:wedge_run:allowed_and_denied_commands"
  [arch-check]="test:wedge_run:i386_int80_execve_kills_the_process"
  [x32-check]="test:wedge_run:x32_syscall_numbers_kill_the_process"
  [single-thread]="test:wedge_run:exec_from_a_multithreaded_process_is_denied"
  [id-valid-recheck]="test:wedge_run:a_target_that_dies_after_its_request_was_read_is_refused_as_stale"
  [effective-command]="test:exec_bypass:the_three_bypasses_are_denied_and_run_without_the_rule"
  [spawn-blocking]="scenario:worker-starvation:strategy=blocking-pool-std-mutex cpus=1 concurrency=1 builder=wedge"
  [std-spawn-lock]="scenario:cwd-race:strategy=blocking-pool-std-mutex builder=wedge"
  [zygote]="scenario:fork-while-locked:strategy=zygote"
)
order=(eventfd-wake begin-idempotence bounded-drain listener-handback signal-escalation caller-pgrp
  pdeathsig-thread arch-check x32-check single-thread id-valid-recheck effective-command spawn-blocking
  std-spawn-lock zygote)

failed=0
rows=()
# The baseline: every check must pass with no mutation.
declare -A seen=()
for m in "${order[@]}"; do
  IFS=';' read -ra cs <<<"${checks[$m]}"
  for c in "${cs[@]}"; do
    [[ -n "$c" && -z "${seen[$c]:-}" ]] || continue
    seen[$c]=1
    log="$logs/baseline-$(echo "$c" | tr -c 'a-zA-Z0-9_-' '_')"
    if WEDGE_MUTATION="" run_check "$c" "$log"; then
      echo "baseline ok: $c" >&2
    else
      echo "BASELINE FAILED (no mutation): $c (log: $log)" >&2
      failed=1
    fi
  done
done

for m in "${order[@]}"; do
  IFS=';' read -ra cs <<<"${checks[$m]}"
  caught=()
  names=()
  for c in "${cs[@]}"; do
    [[ -n "$c" ]] || continue
    names+=("$c")
    log="$logs/$m-$(echo "$c" | tr -c 'a-zA-Z0-9_-' '_')"
    if ! WEDGE_MUTATION="$m" run_check "$c" "$log"; then caught+=("$c"); fi
  done
  if ((${#caught[@]} > 0)); then
    verdict=killed
    by=$(IFS=', '; echo "${caught[*]}")
  else
    verdict=survived
    failed=1
    by=${names[*]:-"(no check)"}
  fi
  rows+=("$m | $by | $verdict")
  echo "$m: $verdict" >&2
done

{
  echo "mutation | caught by | killed/survived"
  echo "--- | --- | ---"
  printf '%s\n' "${rows[@]}"
} | tee ${table_out:+"$table_out"}
exit "$failed"
