#!/bin/bash
# Issue 24: record 20 failing/hanging 1-vCPU guest trials, replay each exactly; plain-vs-record
# pairs for the slowdown. Binaries of 22fe19e in /work/bin-rr(-static).
cd /work/main
export WEDGE_GUEST_BIN_DIR=/work/bin-rr-static
W=/work/bin-rr/wedge
R=/work/runs/rr
mkdir -p $R
cells=(
  "close-none|scenarios/close-doesnt-wake.toml|--cell variant=pre-fix --cell sandbox=none --cell kernel=6.1"
  "close-bwrap|scenarios/close-doesnt-wake.toml|--cell variant=pre-fix --cell sandbox=bwrap --cell kernel=6.1"
  "orphaned|scenarios/orphaned-filter-recv.toml|--cell variant=pre-fix --cell sandbox=none --cell kernel=6.1"
  "starve|scenarios/worker-starvation.toml|--kernel 6.1 --cell strategy=inline --cell cpus=1 --cell concurrency=4 --cell builder=wedge"
)
printf 'cell\tseed\tplain_s\trecord_s\treplay_s\treplay_rc\texact\n' > $R/table.tsv
for s in 1 2 3 4 5; do
  for c in "${cells[@]}"; do
    IFS='|' read -r name file filt <<< "$c"
    seed=$((24000 + s))
    plain=-
    if [ $s -le 2 ]; then
      t0=$(date +%s.%N)
      $W run -q --backend vm --cpus 1 --trials 1 --seed $seed --out $R/plain-$name-$s $filt $file > /dev/null 2>&1
      plain=$(echo "$(date +%s.%N) - $t0" | bc)
    fi
    t0=$(date +%s.%N)
    $W run -q --record --backend vm --cpus 1 --trials 1 --seed $seed --out $R/rec-$name-$s $filt $file > /dev/null 2>&1
    rec=$(echo "$(date +%s.%N) - $t0" | bc)
    d=$(ls -d $R/rec-$name-$s/recordings/*/ 2>/dev/null | head -1)
    if [ -z "$d" ]; then printf '%s\t%s\t%s\t%s\t-\t-\tno-recording\n' $name $seed $plain $rec >> $R/table.tsv; continue; fi
    t0=$(date +%s.%N)
    $W replay --exact $d > $R/replay-$name-$s.txt 2>&1; rc=$?
    rep=$(echo "$(date +%s.%N) - $t0" | bc)
    ex=$(grep -c '^replay: exact' $R/replay-$name-$s.txt)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $name $seed $plain $rec $rep $rc $ex >> $R/table.tsv
  done
done
date -u +"end %FT%TZ" >> $R/table.tsv
