#!/usr/bin/env bash
# The field catalogue's long run: every question of field/ against every runtime (bubblewrap,
# firejail, nsjail, srt, codex, runc, crun, systemd-nspawn where it could be had), results in a
# directory, and a check that nothing was left on the machine by the whole run.
#
#   ci/field.sh [OUT_DIR] [wedge run options...]     e.g. ci/field.sh /tmp/field --trials 3
#
# OUT_DIR (default wedge-results/field-<UTC time>) gets wedge's reports (summary.md, summary.json,
# trials.jsonl, junit.xml, index.html), report.md (field/report.sh: the runtime x question
# table), versions.txt (the runtimes' versions), and leftovers-before.txt / leftovers-after.txt /
# leftovers.diff (field/leftovers.sh around the run, judged by field/leftovers-diff.sh;
# leftovers-elsewhere.txt: what other jobs on the machine made meanwhile).
#
# WEDGE is the wedge binary (default ./target/release/wedge, with wedge-init etc. beside it).
# Trials run one at a time (WEDGE_FIELD_JOBS, default 1): with two at once wedge blames one
# nspawn trial for the other's cgroups (reports/field/README.md), and one at a time every
# leftover outside a trial's own places is attributed by timing alone. 5 trials a cell (the
# scenarios' own) take about 12 minutes on 2 cores.
#
# Cells that miss their expectation are findings about the runtimes, not failures of this script
# (reports/field/README.md explains each): it exits 0 when wedge ran (whatever the cells said) and
# the machine is as clean as before, 1 when something was left behind, 2 on wedge's bad input.
# Runs setup first (ci/field-setup.sh: installs what is missing), needs root, takes ~20 minutes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-wedge-results/field-$(date -u +%Y%m%dT%H%M%SZ)}"
[ "$#" -eq 0 ] || shift
mkdir -p "$out"

timeout 1800 ./ci/field-setup.sh >"$out/setup.log" 2>&1 || { cat "$out/setup.log" >&2; exit 1; }
cp "${WEDGE_FIELD_CACHE:-$HOME/.cache/wedge/field}/versions.txt" "$out/versions.txt"
cat "$out/versions.txt"

wedge="${WEDGE:-./target/release/wedge}"
jobs="${WEDGE_FIELD_JOBS:-1}"
[ -x "$wedge" ] || { echo "ci/field.sh: no $wedge: cargo build --release --workspace --all-features --bins" >&2; exit 2; }

since="$(date +%s)"
field/leftovers.sh >"$out/leftovers-before.txt"
rc=0
timeout 3600 sh -c 'echo $$ >"$0"; exec "$@"' "$out/wedge.pid" "$wedge" run --backend host field/ --jobs "$jobs" --out "$out" "$@" </dev/null || rc=$?
# Stragglers get a moment (a runtime's reaper, a lazy unmount) before the second snapshot, which
# keeps only what is still there 3 s later (not another job's passing files and processes).
sleep 2
field/leftovers.sh --settled --since "$since" >"$out/leftovers-after.txt"
# New items that are the run's to answer for (field/leftovers-diff.sh); other new files and
# cgroups on a shared machine go to leftovers-elsewhere.txt, for the reader.
field/leftovers-diff.sh "$out/leftovers-before.txt" "$out/leftovers-after.txt" "$(cat "$out/wedge.pid" 2>/dev/null || echo 0)" \
  >"$out/leftovers.diff" 2>"$out/leftovers-elsewhere.txt"

[ ! -s "$out/summary.json" ] || timeout 120 field/report.sh "$out" >"$out/report.md" || true
echo "ci/field.sh: results in $out (summary.md, report.md); wedge exited $rc"
if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
  exit "$rc"
fi
if [ -s "$out/leftovers.diff" ]; then
  echo "ci/field.sh: the run left something behind:" >&2
  cat "$out/leftovers.diff" >&2
  exit 1
fi
echo "ci/field.sh: nothing left behind (no new process, file, cgroup or mount)"
