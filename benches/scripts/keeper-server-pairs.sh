#!/bin/bash
# The keeper server (harness/src/engine/spawn_server) on and off, with the same binaries:
# alternating pairs of the trivial scenario, 1000 trials, --jobs 2, then the median per-pair
# ratio (on/off) of wall time and of CPU (user + system of the whole process tree).
# usage: benches/scripts/keeper-server-pairs.sh PAIRS [KEEPER]
#   KEEPER: a keeper binary to force (WEDGE_INIT), e.g. target/release/wedge-init for the
#   dynamic one; by default wedge picks as always (the static keeper when it is of this build).
# Needs: cargo build --release --workspace --all-features --bins (and, for the static keeper,
# ci/build-static.sh --keeper); run as root on an idle machine.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
pairs=${1:?usage: keeper-server-pairs.sh PAIRS [KEEPER]}
[ -n "${2:-}" ] && export WEDGE_INIT=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$pairs"); do
  for arm in on off; do
    rm -rf "$out/run"
    if [ "$arm" = off ]; then export WEDGE_KEEPER_SERVER=off; else unset WEDGE_KEEPER_SERVER; fi
    /usr/bin/time -f "$i $arm %e %U %S" -a -o "$out/times" "$top/target/release/wedge" run -q \
      --backend host --trials 1000 --jobs 2 --out "$out/run" \
      "$top/harness/tests/scenarios/trivial.toml" >/dev/null
  done
done
cat "$out/times"
python3 - "$out/times" <<'PY'
import statistics as st, sys
runs = {}
for line in open(sys.argv[1]):
    i, arm, wall, user, sys_ = line.split()
    runs.setdefault(i, {})[arm] = (float(wall), float(user) + float(sys_))
wall = [r["on"][0] / r["off"][0] for r in runs.values()]
cpu = [r["on"][1] / r["off"][1] for r in runs.values()]
med = lambda arm, k: st.median(r[arm][k] for r in runs.values())
print(f"median wall off {med('off', 0):.2f} s, on {med('on', 0):.2f} s; "
      f"median per-pair ratio on/off {st.median(wall):.3f} ({min(wall):.2f}-{max(wall):.2f})")
print(f"median CPU off {med('off', 1):.2f} s, on {med('on', 1):.2f} s; "
      f"median per-pair ratio on/off {st.median(cpu):.3f}")
PY
