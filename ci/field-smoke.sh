#!/usr/bin/env bash
# The field catalogue's CI smoke: every question of field/ against the runtimes that come from
# Debian (bubblewrap, firejail, runc, crun), 2 trials a cell, one trial at a time: about 3
# minutes on 2 cores. Needs root (the runtimes, cgroups, fanotify) and ci/field-setup.sh's
# Debian packages (it runs `ci/field-setup.sh --debian-only` first: a no-op once installed).
#
#   ci/field-smoke.sh [OUT_DIR]
#   WEDGE=/path/to/wedge ci/field-smoke.sh        another wedge (default ./target/release/wedge)
#
# Several cells are expected to miss their expectation: they are the catalogue's findings about
# these runtimes (e.g. runc leaves its container running when runc is SIGKILLed). So the smoke
# does not gate on the cells themselves but on field/smoke-expected.txt, which records for each
# cell whether its trials meet the expectation ("met") or not ("missed"). It exits 1 when a cell
# differs from the record (wedge stopped seeing a finding, or started failing a runtime that
# behaves), or when anything is left on the machine; 2 when wedge errs or is missing; 0
# otherwise. After a deliberate change (a new runtime version, a new question) regenerate the
# record with WEDGE_FIELD_RECORD=1 and review the diff.
#
# Without OUT_DIR the results go to a temporary directory, removed when the smoke passes and
# kept (its path printed) when it fails. No prompts; every step is bounded by timeout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS
keep=1
if [ "$#" -ge 1 ]; then
  out="$1"
  mkdir -p "$out"
else
  out="$(mktemp -d "${TMPDIR:-/tmp}/wedge-field-smoke.XXXXXX")"
  keep=0
fi
cleanup() { [ "$keep" -eq 1 ] || rm -rf "$out"; }
trap cleanup EXIT

wedge="${WEDGE:-./target/release/wedge}"
[ -x "$wedge" ] || { echo "ci/field-smoke.sh: no $wedge (WEDGE=...)" >&2; keep=1; exit 2; }

if ! timeout 900 ./ci/field-setup.sh --debian-only </dev/null >"$out/setup.log" 2>&1; then
  cat "$out/setup.log" >&2
  echo "ci/field-smoke.sh: ci/field-setup.sh --debian-only failed" >&2
  keep=1
  exit 2
fi

since="$(date +%s)"
field/leftovers.sh >"$out/leftovers-before.txt"
rc=0
timeout 900 sh -c 'echo $$ >"$0"; exec "$@"' "$out/wedge.pid" "$wedge" run --backend host field/ --trials 2 --jobs 1 -q --out "$out" \
  --cell runtime=bwrap --cell runtime=firejail --cell runtime=runc --cell runtime=crun \
  </dev/null >"$out/wedge.log" 2>&1 || rc=$?
sleep 2
field/leftovers.sh --settled --since "$since" >"$out/leftovers-after.txt"
field/leftovers-diff.sh "$out/leftovers-before.txt" "$out/leftovers-after.txt" "$(cat "$out/wedge.pid" 2>/dev/null || echo 0)" \
  >"$out/leftovers.diff" 2>"$out/leftovers-elsewhere.txt"

if [ "$rc" -ne 0 ] || [ ! -s "$out/summary.json" ]; then
  cat "$out/wedge.log" >&2
  echo "ci/field-smoke.sh: wedge exited $rc (results in $out)" >&2
  keep=1
  exit 2
fi

# One line per cell: scenario, cell id, met (every trial met the expectation) or missed.
jq -r '.cells[] | "\(.scenario) \(.cell_id) \(if .met == .trials then "met" else "missed" end)"' \
  "$out/summary.json" | LC_ALL=C sort >"$out/cells.txt"
if [ "${WEDGE_FIELD_RECORD:-}" = 1 ]; then
  {
    echo "# Cells of ci/field-smoke.sh and whether their trials meet the expectation."
    echo "# Regenerate: WEDGE_FIELD_RECORD=1 ci/field-smoke.sh (reports/field/README.md explains each miss)."
    cat "$out/cells.txt"
  } >field/smoke-expected.txt
  echo "ci/field-smoke.sh: recorded $(wc -l <"$out/cells.txt") cells in field/smoke-expected.txt"
fi

status=0
if ! diff <(grep -v '^#' field/smoke-expected.txt) "$out/cells.txt" >"$out/cells.diff"; then
  echo "ci/field-smoke.sh: cells differ from field/smoke-expected.txt (< recorded, > now):" >&2
  cat "$out/cells.diff" >&2
  grep -E '^  ' "$out/wedge.log" | cut -c1-400 | head -40 >&2 || true
  status=1
fi
if [ -s "$out/leftovers.diff" ]; then
  echo "ci/field-smoke.sh: the smoke left something behind:" >&2
  cat "$out/leftovers.diff" >&2
  status=1
fi
total="$(wc -l <"$out/cells.txt")"
missed="$(grep -c ' missed$' "$out/cells.txt" || true)"
if [ "$status" -eq 0 ]; then
  echo "field smoke: ok: $total cells as recorded ($missed of them findings that miss by design), nothing left behind, $((SECONDS - start)) s"
else
  keep=1
  echo "field smoke: FAILED after $((SECONDS - start)) s; results kept in $out" >&2
fi
exit "$status"
