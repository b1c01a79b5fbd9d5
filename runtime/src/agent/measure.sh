#!/usr/bin/env bash
# Measures wedge-agent: 64 concurrent `true` execs per strategy at 1 and 2 workers, RUNS times each.
# Usage: [STRATEGIES="zygote ..."] runtime/src/agent/measure.sh [RUNS] (after `cargo build --release -p wedge-runtime`).
# Each exec has a 10 s timeout, so a build that hangs is counted as not completed instead of hanging.
set -euo pipefail
runs="${1:-5}"
agent="$(cd "$(dirname "$0")/../../.." && pwd)/target/release/wedge-agent"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for strategy in ${STRATEGIES:-inline blocking-pool blocking-pool-async-mutex blocking-pool-std-mutex zygote}; do
  for workers in 1 2; do
    for run in $(seq "$runs"); do
      setsid "$agent" serve --socket "$dir/s.sock" --workers "$workers" --strategy "$strategy" \
        --state-dir "$dir/state" 2>/dev/null &
      pid=$!
      until "$agent" exec --socket "$dir/s.sock" -- true >/dev/null 2>&1; do sleep 0.05; done
      # The outer limit catches what the exec timeout cannot: a build stuck inside an `inline` handler.
      out="$(timeout 30 "$agent" exec --socket "$dir/s.sock" --concurrency 64 --timeout 10000 -- true 2>&1)" &&
        status=0 || status=$?
      if [ "$status" -eq 124 ]; then
        echo "$strategy workers=$workers run=$run: HUNG: no answer within 30 s"
        out=""
      else
        echo "$strategy workers=$workers run=$run: $(tail -n 1 <<<"$out")"
      fi
      # Why the others did not complete, counted by reason.
      grep -v -e ' exit 0 in ' -e ' completed with status 0 in ' <<<"$out" |
        sed -e 's/^wedge-agent: exec [0-9]*\/64: //' -e 's/^id [0-9]* //' -e 's/ in [0-9]* ms//' |
        sort | uniq -c | sed 's/^/    /' || true
      # The agent's process group holds the agent, the zygote and intermediates; init processes have
      # their own sessions (each is pid 1 of its pid namespace), so kill those by parent.
      for child in $(pgrep -P "$pid" || true); do kill -KILL "$child" 2>/dev/null || true; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      rm -f "$dir/s.sock"
    done
  done
done
