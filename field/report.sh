#!/usr/bin/env bash
# field/report.sh RESULTS_DIR: the runtime × question tables of reports/field/README.md from a
# field run's summary.json and trials.jsonl (ci/field.sh writes both).
#
# Prints markdown: one table with a row per runtime and a column per question (a scenario, and
# its other axis value when it has one: exit code, signal), each cell the verdict mark, trials
# that met the expectation / trials, and the median time to verdict; then, for every cell that
# missed, the verdicts seen and the first missing trial's reason, leftovers and diagnosis. Seeds
# are 64-bit: they are read as strings (jq's numbers are doubles and would round them).
set -euo pipefail
dir="${1:?usage: field/report.sh RESULTS_DIR}"
summary="$dir/summary.json"
trials="$dir/trials.jsonl"

runtimes=(bwrap firejail nsjail srt codex runc crun nspawn)

# Columns: "scenario|other-axis-values" in the order the files ask them.
cols="$(jq -r '.cells[] | "\(.scenario)|\(.cell | to_entries | map(select(.key != "runtime" and .key != "kernel")) | map(.value|tostring) | join(","))"' "$summary" |
  awk '!seen[$0]++')"
order="sandboxed exit linger signals kill-runtime component-killed deadlock exec"
cols="$(for s in $order; do echo "$cols" | grep "^$s|" || true; done)"

printf '| runtime |'
while IFS='|' read -r s v; do printf ' %s%s |' "$s" "${v:+ $v}"; done <<<"$cols"
printf '\n|---|'
while IFS= read -r _; do printf -- '---|'; done <<<"$cols"
printf '\n'
for rt in "${runtimes[@]}"; do
  jq -e --arg rt "$rt" 'any(.cells[]; .cell.runtime == $rt)' "$summary" >/dev/null || continue
  printf '| %s |' "$rt"
  while IFS='|' read -r s v; do
    c="$(jq -r --arg rt "$rt" --arg s "$s" --arg v "$v" '
      [.cells[] | select(.scenario == $s and .cell.runtime == $rt and
        ((.cell | to_entries | map(select(.key != "runtime" and .key != "kernel")) | map(.value|tostring) | join(",")) == $v))][0]
      | if . == null then "—" else
          (if .met == .trials then "✅" elif .met == 0 then "❌" else "⚠️" end) + " \(.met)/\(.trials) · " +
          (if .median_ms < 1000 then "\(.median_ms | floor) ms" else "\(.median_ms / 100 | floor / 10) s" end)
        end' "$summary")"
    printf ' %s |' "$c"
  done <<<"$cols"
  printf '\n'
done

echo
echo "Cells that missed their expectation (the first missing trial of each):"
echo
jq -r -s '
  group_by([.scenario, (.cell | tostring)])[]
  | select(any(.[]; .met | not))
  | (map(.verdict) | group_by(.) | map("\(length) \(.[0])") | join(", ")) as $verdicts
  | (map(select(.met | not)) | first) as $t
  | "- **\($t.scenario)** `\($t.cell | to_entries | map("\(.key)=\(.value)") | join(","))` (\($verdicts)): \($t.reason)"
    + (if ($t.lingering // []) | length > 0 then "; still running after it exited: \($t.lingering | join("; "))" else "" end)
    + (if ($t.leaks // []) | length > 0 then "; leaked: \($t.leaks | join("; "))" else "" end)
    + (if $t.diagnosis then "; diagnosis: \($t.diagnosis.summary // $t.diagnosis | tostring)" else "" end)
    + " (replay: seed \($t.seed))"
' <(sed -E 's/"seed":([0-9]+)/"seed":"\1"/' "$trials") | cut -c1-1200
