#!/bin/bash
# vt.sh's reruns for the other failing seeds, round-robin (so a cut-off leaves every seed with
# about as many reruns), stopping at 03:55 UTC.
cd /work/main
export WEDGE_GUEST_BIN_DIR=/work/bin-rr-static
W=/work/bin-vt/wedge
R=/work/runs/vt
CELL="--cell strategy=blocking-pool --cell cpus=4 --cell concurrency=16 --cell builder=wedge"
F=scenarios/concurrent-exec-pass-rate.toml
for i in $(seq 1 19); do
  for s in 7002 7004 7006 7007; do
    [ "$(date -u +%H%M)" -ge 0355 ] && { date -u +"cut %FT%TZ" >> $R/runs.txt; exit 0; }
    t0=$(date +%s)
    $W replay $F $CELL --seed $s --record --out $R/s$s > $R/last.txt 2>&1
    v=$(tail -1 $R/s$s/trials.jsonl | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["verdict"], r.get("loss") or "-")')
    echo "$s $v $(( $(date +%s) - t0 ))" >> $R/runs.txt
  done
done
date -u +"end %FT%TZ" >> $R/runs.txt
