#!/bin/bash
# Issue 25: every figure of reports/bench.md's "Floors, and the main job in minutes", in one run.
# Run on an idle machine, as root, from anywhere, after
#   cargo build --release --workspace --all-features --bins
#   ci/build-static.sh --keeper        (else the trivial trials start the dynamic keeper)
#   cargo bench -p wedge-benches --all-features --bench agent_exec --no-run
# usage: benches/scripts/issue25-run.sh OUT_DIR [OLD_WEDGE_AGENT]
#   (with OLD_WEDGE_AGENT, also an A/B of that agent binary against the one built here)
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
R=${1:?usage: issue25-run.sh OUT_DIR [OLD_WEDGE_AGENT]}; mkdir -p "$R"; R=$(cd "$R" && pwd)
OLD_AGENT=${2:-}
T=./target/release
log() { echo "== $* $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $R/steps; }
log start; git rev-parse --short HEAD > $R/commit; uname -r > $R/kernel
log exec_floor_pairs idle
$T/exec_floor_pairs --rounds 9 --execs 500 > $R/floor-idle.md 2>&1
log exec_floor_pairs load2
$T/exec_floor_pairs --rounds 9 --execs 500 --load 2 > $R/floor-load2.md 2>&1
log supervisor cpu and wait
"$here/supervisor-wait.sh" > $R/supervisor-wait.txt 2>&1
log perf
cat > /tmp/r25-loop3k.sh <<'EOS'
#!/bin/sh
i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done
EOS
chmod +x /tmp/r25-loop3k.sh
RUST_LOG=warn perf record -F 20000 -g -o $R/perf-wr.data -- $T/wedge-run --sandbox none -- /tmp/r25-loop3k.sh > /dev/null 2>&1
perf record -F 20000 -g -o $R/perf-floor.data -- $T/floor_supervisor --read -- /tmp/r25-loop3k.sh > /dev/null 2>&1
log trial floor
for i in 1 2 3; do $T/trial_floor --jobs 2 --trials 1000; done > $R/trial-floor.txt 2>&1
log trivial
# Which keeper the trials start (harness/src/engine/keeper.rs): the static one when it is of this build.
{ $T/wedge-init --fingerprint; [ -x $T/wedge-init-static ] && $T/wedge-init-static --fingerprint; } > $R/keeper-fingerprints.txt 2>&1
for i in 1 2 3; do rm -rf /tmp/r25-triv; /usr/bin/time -f "%e s %U user %S sys" $T/wedge run -q --backend host --trials 1000 --jobs 2 --out /tmp/r25-triv harness/tests/scenarios/trivial.toml; done > $R/trivial.txt 2>&1
rm -rf /tmp/r25-triv
log agent bench
cargo bench -p wedge-benches --all-features --bench agent_exec > $R/agent.txt 2>&1
log main job
rm -rf /tmp/r25-main; /usr/bin/time -f "%e s" $T/wedge run --gate --out /tmp/r25-main > $R/main-job.txt 2>&1; echo "rc $?" >> $R/main-job.txt
log end
log agent perf split
rm -rf /tmp/r25-ag && mkdir -p /tmp/r25-ag/st
WEDGE_AGENT_LOG=warn setsid $T/wedge-agent serve --socket /tmp/r25-ag/a.sock --strategy zygote --workers 2 --state-dir /tmp/r25-ag/st > /tmp/r25-ag/serve.log 2>&1 &
SERVE=$!
for i in $(seq 100); do [ -S /tmp/r25-ag/a.sock ] && break; sleep 0.1; done
$T/wedge-agent exec --socket /tmp/r25-ag/a.sock --concurrency 64 -- /bin/true > /dev/null 2>&1
ZYG=$(pgrep -P $SERVE | head -1)
echo "serve $SERVE zygote $ZYG" > $R/agent-pids
cat /proc/stat | head -1 > $R/agent-stat-before
ls /proc/$SERVE/task > $R/agent-serve-tids
perf record -F 10000 -g -a -o $R/perf-agent.data -- sh -c "for i in \$(seq 20); do $T/wedge-agent exec --socket /tmp/r25-ag/a.sock --concurrency 64 -- /bin/true >/dev/null 2>&1 & echo \$! >> $R/agent-client-pids; wait; done" > /dev/null 2>&1
cat /proc/stat | head -1 > $R/agent-stat-after
kill -- -$SERVE 2>/dev/null; kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null
rm -rf /tmp/r25-ag
log end2
if [ -n "$OLD_AGENT" ]; then
  BATCHES=15 ROUNDS=8 "$here/agent-ab.sh" "$OLD_AGENT" "$T/wedge-agent" > $R/agent-ab.txt 2>&1
fi
log end3
# The splits reports/bench.md quotes.
perf script -i $R/perf-wr.data --comm supervisor -F comm,tid,period,ip,sym,dso 2>/dev/null \
  | "$here/syscall_split.py" supervisor 3000 > $R/supervisor-split.txt
perf script -i $R/perf-floor.data --comm floor_superviso -F comm,tid,period,ip,sym,dso 2>/dev/null \
  | "$here/syscall_split.py" floor_superviso 3000 > $R/floor-split.txt
read -r _ SERVE _ ZYG < $R/agent-pids
perf script -i $R/perf-agent.data -F comm,pid,tid,period -G 2>/dev/null \
  | "$here/agent_split.py" "$SERVE" "$ZYG" $R/agent-client-pids > $R/agent-split.txt
rm -rf /tmp/r25-loop3k.sh /tmp/r25-main
