#!/usr/bin/env bash
# wedge's whole test suite: format, lints, every test. This is the README's test command and what
# .ci/run calls. Every test that can deadlock runs under its own watchdog; the outer `timeout`
# is a last safety net so this script can never hang a CI job.
set -euo pipefail
cd "$(dirname "$0")/.."

./ci/setup.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
limit="${WEDGE_TEST_LIMIT:-1500}" # seconds for each step

# Each step says how long it took, so a slow step shows in the CI log (the whole run has a
# 30-minute budget).
step() {
  echo "== $*" >&2
  local start=$SECONDS
  timeout --kill-after=30 "$limit" "$@"
  echo "== $(($SECONDS - start)) s: $1 ${2:-}" >&2
}

step cargo fmt --all -- --check
# Module dependencies point one way: no cycle among files or folders of any crate.
step python3 ci/module-cycles.py harness/src runtime/src runtime/core/src sys/src benches/src
# The scenario cells (harness/tests/scenario_cells.rs) run the real runtime binaries; cargo test
# does not build another package's binaries, so build them first.
step cargo build --workspace --all-features --release --bins
# The static keeper (target/release/wedge-init-static): every host trial below starts it, as on
# any machine that built it (harness/src/engine/keeper.rs). The guests keep the dynamic build:
# the VM backend packs these same binaries, with the shared libraries they link
# (harness/src/vm/strip.rs).
step ./ci/build-static.sh --keeper -q
# One trial per scenario cell here: the gate below runs the default suite properly.
step env WEDGE_TEST_TRIALS="${WEDGE_TEST_TRIALS:-1}" cargo test --workspace --all-features --release
# The agent's end-to-end tests once more, every exec built by youki's libcontainer 0.5.7.
step env WEDGE_TEST_AGENT_BUILDER=libcontainer cargo test -p wedge-runtime --all-features --release --test agent_exec
# Every bench body once in test mode (one trial per scenario cell), so they keep compiling and
# working; the full run is `cargo bench -p wedge-benches` (README). The same packages and
# features as the test build above, so that no crate is compiled again (`-p wedge-benches` alone
# unifies other features and rebuilt half the workspace: about 2 minutes).
step cargo bench --workspace --all-features --bench '*' -- --test
# The two floor programs once, tiny, so they keep working (reports/bench.md runs them in full).
step ./target/release/exec_floor_pairs --rounds 1 --execs 5
step ./target/release/trial_floor --jobs 2 --trials 20

# Clippy, the fuzz smoke and the loom models need builds of their own (check mode, other flags,
# other target directories) and are CPU-bound, while the gates below mostly wait on their
# subjects' timeouts. So they run meanwhile (the agent's second build and clippy first: nothing in
# the foreground runs cargo until they are joined), in the background, at the lowest CPU and I/O priority so that the
# gates' trials keep the machine, and are joined after the gates (their output is shown then,
# and their failure fails this script). In a session of their own, so the exit trap can stop
# them (and all their compilers and fuzzers) if this script ends early.
background_log=target/background.log
setsid nice -n 19 ionice -c 3 timeout --kill-after=30 "$limit" bash -c '
  set -e
  s=$SECONDS
  # wedge-agent-latest, the agent against libcontainer'"'"'s current release (a workspace of its own),
  # for the steps after the join that ask for `--builder libcontainer-latest`. A failure fails the
  # join, after the other steps have still run.
  latest=0
  ./ci/build-libcontainer-latest.sh -q || latest=$?
  echo "== $((SECONDS - s)) s: wedge-agent-latest (status $latest)"
  s=$SECONDS
  cargo clippy --workspace --all-targets --all-features --release -- -D warnings
  echo "== $((SECONDS - s)) s: cargo clippy"
  s=$SECONDS
  # Every cargo-fuzz target builds and runs briefly from its corpus (skips, saying so, without
  # nightly).
  WEDGE_FUZZ_SECONDS="${WEDGE_FUZZ_SECONDS:-10}" ./ci/fuzz-smoke.sh
  echo "== $((SECONDS - s)) s: fuzz smoke"
  s=$SECONDS
  # The loom models check the runtime'"'"'s own coordinator, supervisor loops and spawn lock, all in
  # wedge-core (the only crate they build); every crate is compiled with --cfg loom, kept apart
  # from the normal build.
  RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 \
    cargo test --release -p wedge-core --test "loom_*"
  echo "== $((SECONDS - s)) s: loom models"
  exit "$latest"' >"$background_log" 2>&1 </dev/null &
background=$!
trap 'kill -KILL -- "-$background" 2>/dev/null || true' EXIT
# Waits for the background steps, shows what they printed, and fails if they failed.
join_background() {
  echo "== waiting for wedge-agent-latest, clippy, the fuzz smoke and the loom models (log: $background_log)" >&2
  local start=$SECONDS status=0
  wait "$background" || status=$?
  cat "$background_log" >&2
  echo "== $(($SECONDS - start)) s: waited for the background steps (status $status)" >&2
  return "$status"
}

# The quick gate on deadlock freedom, exactly as a user's CI runs it: every fixed variant must
# pass, every pre-fix variant must be caught. Each scenario's own (small) trial counts.
results=target/wedge-ci-results
rm -rf "$results" "$results-example" "$results-agent" "$results-libcontainer" "$results-chaos"
# Host cells only: the cells on other kernels and vCPU counts run in VMs under TCG, which the
# VM smoke below samples (one boot per kernel); the full matrix is reports/'s job.
# The agent scenarios' libcontainer rows are gated on a rate (the library loses builds by itself),
# so each runs 20 trials: all of them here would add about half an hour. They run with the wedge
# builder here, and cwd-race, the one the library must be caught in, with libcontainer below.
agent_scenarios=(scenarios/cwd-race.toml scenarios/worker-starvation.toml scenarios/concurrent-exec-pass-rate.toml)
other_scenarios=()
for f in scenarios/*.toml; do
  case " ${agent_scenarios[*]} " in *" $f "*) ;; *) other_scenarios+=("$f") ;; esac
done
step ./target/release/wedge run --gate --backend host --allow-skipped --out "$results" "${other_scenarios[@]}"
step ./target/release/wedge run --gate --backend host --allow-skipped --out "$results-agent" \
  --cell builder=wedge "${agent_scenarios[@]}"
step ./target/release/wedge run --gate --backend host --out "$results-libcontainer" \
  --cell builder=libcontainer scenarios/cwd-race.toml
# The chaos rows (no failpoints; the agent's threads demoted at seeded times, or held at seeded
# syscall entries): the zygote's must pass under both; the in-process rows are measured by
# `wedge run --cell chaos=rr` / `--cell chaos=syscall` (reports/determinism.md). No `builder`
# filter: fork-while-locked has no such axis, and a filter on an axis a scenario lacks leaves
# none of its cells (the step ran only worker-starvation's rows that way); the library builder
# is opt-in, so worker-starvation plans only its `wedge` rows anyway.
step ./target/release/wedge run --gate --backend host --allow-skipped --out "$results-chaos" \
  --cell chaos=rr --cell chaos=syscall --cell strategy=zygote \
  scenarios/worker-starvation.toml scenarios/fork-while-locked.toml
# The example users copy to gate their own runtime must keep working too.
step ./target/release/wedge run --gate --trials 3 --out "$results-example" ci/example-scenarios
# The VM smoke: one boot per kernel of a pre-fix orphaned-filter-recv cell (hangs on 6.1,
# passes on 6.12, diagnosed in NOTIF_RECV), and a guest that must see exactly 4 vCPUs.
rm -rf "$results-vm" "$results-vm-cpus"
step ./target/release/wedge run --gate --trials 1 --out "$results-vm" \
  --cell variant=pre-fix --cell sandbox=none --cell kernel=6.1 --cell kernel=6.12 \
  scenarios/orphaned-filter-recv.toml
step ./target/release/wedge run --gate --out "$results-vm-cpus" ci/vm-smoke
# The field smoke: every question of field/ against the runtimes that come from Debian
# (bubblewrap, firejail, runc, crun), each cell against its recorded finding
# (field/smoke-expected.txt); the npm/PyPI runtimes are ci/field.sh's longer run.
step env WEDGE=./target/release/wedge ./ci/field-smoke.sh
join_background
# libcontainer's current release (built in the background above): the agent's tests, and the cwd
# race, which must still be caught with the library's own chdir.
step env WEDGE_TEST_AGENT_BUILDER=libcontainer-latest cargo test -p wedge-runtime --all-features --release --test agent_exec
rm -rf "$results-latest"
step ./target/release/wedge run --gate --backend host --out "$results-latest" \
  --cell builder=libcontainer-latest scenarios/cwd-race.toml
# Curated mutations: each reverted fix must be caught by the checks named for it (the build above,
# mutations chosen at run time; see the script).
step ./ci/mutants.sh
