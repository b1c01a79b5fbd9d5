#!/usr/bin/env bash
# The field catalogue's CI smoke: every question of field/ against the runtimes that come from
# Debian (bubblewrap, firejail, runc, crun), 2 trials a cell, a few minutes.
#
#   ci/field-smoke.sh [OUT_DIR]
#
# Several cells are expected to miss their expectation: they are the catalogue's findings about
# these runtimes (e.g. runc leaves its container running when runc is SIGKILLed). So the smoke
# does not gate on the cells themselves but on field/smoke-expected.txt, which records for each
# cell whether its trials meet the expectation ("met") or not ("missed"). The smoke fails when
# a cell changes (wedge stopped seeing a finding, or started failing a runtime that behaves),
# when anything is left on the machine, or when wedge errs. After a deliberate change (a new
# runtime version, a new question) regenerate the record with WEDGE_FIELD_RECORD=1 and review
# the diff.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-wedge-results/field-smoke-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"

timeout 900 ./ci/field-setup.sh --debian-only >"$out/setup.log" 2>&1 || { cat "$out/setup.log" >&2; exit 1; }
cat "${WEDGE_FIELD_CACHE:-$HOME/.cache/wedge/field}/versions.txt"

wedge="${WEDGE:-./target/release/wedge}"
[ -x "$wedge" ] || { echo "ci/field-smoke.sh: no $wedge" >&2; exit 2; }

field/leftovers.sh >"$out/leftovers-before.txt"
rc=0
timeout 900 "$wedge" run --backend host field/ --trials 2 --jobs 2 -q --out "$out" \
  --cell runtime=bwrap --cell runtime=firejail --cell runtime=runc --cell runtime=crun \
  </dev/null >"$out/wedge.log" 2>&1 || rc=$?
sleep 2
field/leftovers.sh >"$out/leftovers-after.txt"
diff "$out/leftovers-before.txt" "$out/leftovers-after.txt" | grep '^>' >"$out/leftovers.diff" || true

if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
  cat "$out/wedge.log" >&2
  echo "ci/field-smoke.sh: wedge exited $rc" >&2
  exit "$rc"
fi

# One line per cell: scenario, cell id, met (every trial met the expectation) or missed.
jq -r '.cells[] | "\(.scenario) \(.cell_id) \(if .met == .trials then "met" else "missed" end)"' \
  "$out/summary.json" | sort >"$out/cells.txt"
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
  grep -A3 -E '^(❌|- )' "$out/summary.md" | head -60 >&2 || true
  status=1
fi
if [ -s "$out/leftovers.diff" ]; then
  echo "ci/field-smoke.sh: the smoke left something behind:" >&2
  cat "$out/leftovers.diff" >&2
  status=1
fi
missed="$(grep -c ' missed$' "$out/cells.txt" || true)"
total="$(wc -l <"$out/cells.txt")"
echo "ci/field-smoke.sh: $total cells, $missed missing their expectation as recorded (findings), results in $out"
[ "$status" -eq 0 ] && echo "field smoke: $((total)) passed, 0 failed" || echo "field smoke: 0 passed, 1 failed"
exit "$status"
