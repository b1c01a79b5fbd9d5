#!/bin/bash
# Issue 24: how often does the same seed reproduce a failing trial in a 4-vCPU guest run in
# seeded virtual time (--record)? Single-trial boots (wedge replay --seed S --record).
cd /work/main
export WEDGE_GUEST_BIN_DIR=/work/bin-rr-static
W=/work/bin-vt/wedge
R=/work/runs/vt
mkdir -p $R
CELL="--cell strategy=blocking-pool --cell cpus=4 --cell concurrency=16 --cell builder=wedge"
F=scenarios/concurrent-exec-pass-rate.toml
one() { # seed -> verdict of a fresh single-trial boot
  local t0=$(date +%s)
  $W replay $F $CELL --seed $1 --record --out $R/s$1 > $R/last.txt 2>&1
  local v=$(tail -1 $R/s$1/trials.jsonl | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["verdict"], r.get("loss") or "-")')
  echo "$1 $v $(( $(date +%s) - t0 ))" >> $R/runs.txt
  echo "$v"
}
failing=()
for s in $(seq 1 30); do
  v=$(one $((7000 + s)))
  case "$v" in pass*) ;; *) failing+=($((7000 + s))) ;; esac
  [ ${#failing[@]} -ge 5 ] && break
done
echo "failing: ${failing[*]}" >> $R/runs.txt
for s in "${failing[@]}"; do
  for i in $(seq 1 19); do one $s > /dev/null; done
done
date -u +"end %FT%TZ" >> $R/runs.txt
