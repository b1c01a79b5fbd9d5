#!/usr/bin/env bash
# A demonstration run of wedge-run: an allowed command, a denied one (directly and from inside a
# script), and a clean shutdown with a process that outlives the command.
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh
cargo build --release -q -p wedge-runtime
run=target/release/wedge-run

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/policy.toml" <<'TOML'
allow = ["git status"]
deny = ["git push", "rm -rf"]
TOML
mkdir "$work/victim"

show() {
  printf '\n$ wedge-run'; printf ' %q' "$@"; echo
  set +e
  "$run" "$@"
  echo "-> exit status $?"
  set -e
}

echo "Policy ($work/policy.toml):"
sed 's/^/  /' "$work/policy.toml"
show --policy "$work/policy.toml" -- ls -d /usr
show --policy "$work/policy.toml" -- rm -rf "$work/victim"
show --policy "$work/policy.toml" -- sh -c "rm -rf '$work/victim'; echo \"nested rm exited \$?\"; ls -d '$work/victim'"
# A background process outlives the command: the fixed runner still shuts down at once.
show --sandbox none --policy "$work/policy.toml" -- \
  sh -c 'sleep 30 & p=$!; until read c </proc/$p/comm && [ "$c" = sleep ]; do :; done; echo "left $p running"; echo $p >'"$work/lingering"'; exit 0'
kill "$(cat "$work/lingering")"
echo
echo "The same last run with --variant pre-fix never returns: its supervisor is stuck in"
echo "ioctl(SECCOMP_IOCTL_NOTIF_RECV) and close(listener) does not wake it. 'wedge run' catches that."
