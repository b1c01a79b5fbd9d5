#!/bin/bash
# A/B of two wedge-agent binaries: $ROUNDS alternations (default 4), each a fresh serve (zygote,
# 2 workers), one warm-up exec, then $BATCHES batches (default 5) of 64 concurrent /bin/true;
# prints each batch's execs/s, prefixed "old" or "new". As root.
# usage: agent-ab.sh OLD_WEDGE_AGENT NEW_WEDGE_AGENT
set -u
OLD=${1:?usage: agent-ab.sh OLD NEW}; NEW=${2:?usage: agent-ab.sh OLD NEW}
ab() { # name binary
  local d=/tmp/r25-ab-$1; rm -rf $d; mkdir -p $d/st
  WEDGE_AGENT_LOG=warn setsid $2 serve --socket $d/a.sock --strategy zygote --workers 2 --state-dir $d/st > $d/serve.log 2>&1 &
  local pid=$!
  for i in $(seq 100); do [ -S $d/a.sock ] && break; sleep 0.1; done
  $2 exec --socket $d/a.sock --concurrency 64 -- /bin/true > /dev/null 2>&1
  for b in $(seq ${BATCHES:-5}); do
    $2 exec --socket $d/a.sock --concurrency 64 -- /bin/true 2>&1 | grep -o '[0-9.]* execs/s' | sed "s/^/$1 /"
  done
  kill -- -$pid 2>/dev/null; kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf $d
}
for round in $(seq ${ROUNDS:-4}); do
  if [ $((round % 2)) = 1 ]; then ab old "$OLD"; ab new "$NEW"
  else ab new "$NEW"; ab old "$OLD"; fi
done
