#!/bin/bash
# Issue 25 (reports/bench.md). Alone and beside 2 busy shells: per exec, the supervisor thread's CPU and run-queue wait
# (/proc/PID/task/TID/schedstat: on-CPU ns, waiting-on-runqueue ns, timeslices), and wall time.
here=$(cd "$(dirname "$0")" && pwd)
T="$here/../../target/release"
cat > /tmp/lw-loop.sh <<'EOS'
#!/bin/sh
i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done
touch /tmp/lw-loop.done; exec sleep 2
EOS
chmod +x /tmp/lw-loop.sh
one() { rm -f /tmp/lw-loop.done; local s=$(date +%s%N); "$@" -- /tmp/lw-loop.sh & p=$!; while [ ! -e /tmp/lw-loop.done ]; do sleep 0.02; done; local e=$(date +%s%N); for t in /proc/$p/task/*; do c=$(cat $t/comm); case "$c" in supervisor|floor_superviso) read cpu wait n < $t/schedstat; echo "$c wall_us/exec $(( (e-s)/2000000 )) cpu_us/exec $((cpu/2000000)) rqwait_us/exec $((wait/2000000)) slices $n";; esac; done; wait $p; }
for load in 0 2; do
  pids=""; for i in $(seq $load); do sh -c 'while :; do :; done' & pids="$pids $!"; done
  for r in 1 2 3; do
    echo "load=$load"; RUST_LOG=warn one $T/wedge-run --sandbox none; one $T/floor_supervisor --read
  done
  [ -n "$pids" ] && kill $pids
done
rm -f /tmp/lw-loop.sh /tmp/lw-loop.done
