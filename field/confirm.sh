#!/usr/bin/env bash
# field/confirm.sh RUNTIME QUESTION: ask one runtime one question of the field catalogue by hand,
# outside wedge, and print what happened: the command, its exit status, how long it took, and
# what it left behind (processes, files under /tmp /var/tmp /run /dev/shm, cgroups, mounts).
# Whatever it left is then removed (processes killed by pid, runc/crun containers deleted), so
# the machine is as before. Every wait is bounded.
#
#   RUNTIME   bwrap firejail nsjail srt codex runc crun nspawn
#   QUESTION  exit0 exit3 linger term int int2 intgroup kill component deadlock exec
#
# These are the "confirm by hand" commands of reports/field/README.md. Needs ci/field-setup.sh
# and wedge-subject ($WEDGE_BIN_DIR, else target/release of this checkout, else /work/main's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rt="${1:?usage: field/confirm.sh RUNTIME QUESTION}"
q="${2:?usage: field/confirm.sh RUNTIME QUESTION}"
bin_dir="${WEDGE_BIN_DIR:-}"
if [ -z "$bin_dir" ]; then
  for d in "$here/../target/release" /work/main/target/release; do
    [ -x "$d/wedge-subject" ] && { bin_dir="$(cd "$d" && pwd)"; break; }
  done
fi
subject="$bin_dir/wedge-subject"
id="field-confirm-$$"

case "$rt" in
  bwrap) P=(bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --die-with-parent --) ;;
  firejail) P=(firejail --quiet --noprofile --) ;;
  nsjail) P=("$here/bin/nsjail" -Mo -Q --chroot / -t 0 --) ;;
  srt) P=("$here/bin/srt" --settings "$here/srt-settings.json") ;;
  codex) P=("$here/bin/codex" sandbox --) ;;
  runc | crun) P=("$here/bin/oci-run" "$rt" "$id") ;;
  nspawn) P=("$here/bin/nspawn") ;;
  *) echo "unknown runtime $rt" >&2; exit 2 ;;
esac
# Which process "component" kills: the sandbox's own helper between the runtime and the command.
case "$rt" in
  bwrap | codex) comp=bwrap ;;   # the newest bwrap: pid 1 of the sandbox's pid namespace
  firejail) comp=firejail ;;     # the newest firejail: the sandbox's child process
  srt) comp=socat ;;             # a network proxy inside the sandbox
  *) comp=sleep ;;               # no helper of its own: the command (sleep) itself
esac

work="$(mktemp -d /tmp/wedge-field-confirm.XXXXXX)"
mkdir "$work/tmp"
cd "$work"
export TMPDIR="$work/tmp"
export WEDGE_FIELD_CONFIRM="$id"
"$here/leftovers.sh" >"$work/before" 2>/dev/null || true
pids() { "$here/leftovers.sh" 2>/dev/null | grep '^process' || true; }

newest() { # COMM: the newest (last started) process with that comm among $bg's descendants
  local tree="$bg" grew=1 pid ppid
  while [ "$grew" = 1 ]; do
    grew=0
    while read -r pid ppid; do
      if [[ " $tree " == *" $ppid "* ]] && [[ " $tree " != *" $pid "* ]]; then
        tree="$tree $pid"
        grew=1
      fi
    done < <(ps -e -o pid=,ppid=)
  done
  ps -o pid=,comm= --sort=start_time -p "${tree// /,}" | awk -v c="$1" '$2 == c {p = $1} END {print p}'
}
wait_for() { # FILE PATTERN SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# Job control: each background job gets a process group of its own and, unlike a background
# job of a non-interactive shell, does not start with SIGINT and SIGQUIT ignored.
set -m
start_bg() { # run the runtime in the background as its own process group
  local in=/dev/null
  [ -p "$work/in" ] && in="$work/in"
  "${P[@]}" "$@" >"$work/out" 2>"$work/err" <"$in" &
  bg=$!
  wait_for "$work/out" ready 20 || echo "(no 'ready' after 20 s)"
}
finish_bg() { # SECONDS: wait for the background runtime, print its status and the time it took
  local t0 i
  t0=$(date +%s%N)
  for ((i = 0; i < $1 * 10; i++)); do kill -0 "$bg" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$bg" 2>/dev/null; then
    echo "result: still running after $1 s (pid $bg)"
    kill -KILL "$bg" 2>/dev/null || true
  fi
  local rc=0
  wait "$bg" || rc=$?
  echo "result: exit status $rc after $((($(date +%s%N) - t0) / 1000000)) ms"
}

echo "runtime: $rt; question: $q"
t0=$(date +%s%N)
case "$q" in
  exit0 | exit3 | linger)
    case "$q" in
      exit0) cmd=(/bin/true) ;;
      exit3) cmd=(/bin/sh -c 'exit 3') ;;
      linger) cmd=(/bin/sh -c 'sleep 1000 & exit 0') ;;
    esac
    echo "command: timeout -s KILL 30 ${P[*]} ${cmd[*]}"
    rc=0
    timeout -s KILL 30 "${P[@]}" "${cmd[@]}" </dev/null || rc=$?
    echo "result: exit status $rc after $((($(date +%s%N) - t0) / 1000000)) ms"
    ;;
  term | int | int2 | intgroup | kill | component)
    echo "command: ${P[*]} /bin/sh -c 'echo ready; sleep 1000' &  (then signals)"
    start_bg /bin/sh -c 'echo ready; sleep 1000'
    case "$q" in
      term) echo "signal: kill -TERM $bg"; kill -TERM "$bg" ;;
      int) echo "signal: kill -INT $bg"; kill -INT "$bg" ;;
      int2) echo "signal: kill -INT $bg; sleep 0.5; kill -INT $bg"
        kill -INT "$bg"; sleep 0.5; kill -INT "$bg" 2>/dev/null || echo "(gone after the first)" ;;
      intgroup) echo "signal: kill -INT -- -$bg (its process group, like ^C)"; kill -INT -- "-$bg" ;;
      kill) echo "signal: kill -KILL $bg"; kill -KILL "$bg" ;;
      component)
        c="$(newest "$comp")"
        echo "signal: kill -KILL $c (the newest $comp)"
        [ -n "$c" ] && kill -KILL "$c"
        ;;
    esac
    finish_bg 10
    ;;
  deadlock)
    echo "command: timeout -s KILL 5 ${P[*]} $subject deadlock"
    rc=0
    timeout -s KILL 5 "${P[@]}" "$subject" deadlock </dev/null || rc=$?
    echo "result: exit status $rc after $((($(date +%s%N) - t0) / 1000000)) ms (137: still stuck at 5 s)"
    ;;
  exec)
    case "$rt" in
      runc | crun)
        echo "command: ${P[*]} /bin/sh -c 'echo ready; read x' &  then 4 × field/bin/oci $rt exec $id sh -c 'echo exec \$i' concurrently"
        # The container's stdin: a fifo this script holds open, so `read` waits for our line.
        mkfifo "$work/in"
        exec 4<>"$work/in"
        start_bg /bin/sh -c 'echo ready; read x; echo done'
        for i in 1 2 3 4; do
          timeout 20 "$here/bin/oci" "$rt" exec "$id" sh -c "echo exec $i" >"$work/exec$i" 2>&1 &
        done
        rcs=""
        for i in 1 2 3 4; do r=0; wait %$((i + 1)) || r=$?; rcs="$rcs $r"; done
        echo "execs: exit statuses$rcs; output: $(cat "$work"/exec? | tr '\n' ' ')"
        echo go >&4
        finish_bg 10
        echo "container's output: $(tr '\n' ' ' <"$work/out")"
        ;;
      firejail)
        P=(firejail --quiet --noprofile "--name=$id" --)
        echo "command: ${P[*]} /bin/sh -c 'echo ready; sleep 1000' &  then 4 × firejail --join=$id sh -c 'echo exec \$i'"
        start_bg /bin/sh -c 'echo ready; sleep 1000'
        for i in 1 2 3 4; do
          timeout 20 firejail --quiet "--join=$id" sh -c "echo exec $i" >"$work/exec$i" 2>&1 </dev/null &
        done
        rcs=""
        for i in 1 2 3 4; do r=0; wait %$((i + 1)) || r=$?; rcs="$rcs $r"; done
        echo "execs: exit statuses$rcs; output: $(cat "$work"/exec? | tr '\n' ' ')"
        kill -TERM "$bg"
        finish_bg 10
        ;;
      *) echo "result: $rt has no way to run a command in a running sandbox"; ;;
    esac
    ;;
  *) echo "unknown question $q" >&2; exit 2 ;;
esac
[ -s "$work/err" ] && echo "stderr: $(head -c 600 "$work/err" | tr '\n' ' ')"

# What it left: wait a second for stragglers, then compare with the snapshot.
sleep 1
"$here/leftovers.sh" >"$work/after" 2>/dev/null || true
left="$(diff "$work/before" "$work/after" | grep '^> ' | sed 's/^> //' |
  grep -v -e "^path $work" -e '^path /tmp/cc' || true)"  # /tmp/cc*: someone's gcc
if [ -n "$left" ]; then
  echo "left behind:"
  echo "$left" | sed 's/^/  /'
else
  echo "left behind: nothing"
fi
[ -n "$(ls -A "$TMPDIR")" ] && echo "left in \$TMPDIR: $(ls -A "$TMPDIR" | tr '\n' ' ')"

# Clean up what this run made.
case "$rt" in
  runc | crun) "$here/bin/oci-delete" "$rt" "$id" || true ;;
esac
# Only processes provably of this run: this run's marker in their environment, or its work dir
# or container id in their argv (nsjail clears the environment; a process of someone else's
# that merely has the same name is never touched).
echo "$left" | sed -n 's/^process [^[]*\[\([0-9]*\)\].*/\1/p' | while read -r p; do
  [ -d "/proc/$p" ] || continue  # gone with the container's delete
  if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "WEDGE_FIELD_CONFIRM=$id" ||
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -e "$work" -e "$id"; then
    kill -KILL "$p" 2>/dev/null || true
  else
    echo "(not killed, not provably this run's: pid $p)"
  fi
done
# Only files the runtimes are known to leave (others may be another user's, made meanwhile).
echo "$left" | sed -n 's/^path \(\/tmp\/\(srt\|codex\|claude\|crun\|firejail\|nsjail\)[^/]*\)$/\1/p' |
  while read -r f; do rm -rf -- "$f"; done
cd /
rm -rf "$work"
