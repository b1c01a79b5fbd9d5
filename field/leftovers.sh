#!/usr/bin/env bash
# Prints what a sandbox runtime could leave behind, one item a line, sorted, so two snapshots
# diff cleanly:
#
#   field/leftovers.sh >before; ...; field/leftovers.sh >after; diff before after
#
# Items: processes of the runtimes and of the field's commands (comm and argv), entries in /tmp,
# /var/tmp, /run (two levels), /dev/shm, every cgroup directory of every hierarchy, and mount
# points. Only reads; never changes anything.
#
#   field/leftovers.sh --settled   the items present in two snapshots 3 s apart: what stays, not
#                                  what another job on the machine made and removes meanwhile
#   field/leftovers.sh --since T   leave out processes that are some older process's work: one
#                                  with an ancestor (below pid 1) started before epoch second T,
#                                  such as a shell's `sleep 60` elsewhere on the machine. What a
#                                  run started after T and left is orphaned: every ancestor of it
#                                  below pid 1 started after T too.
set -euo pipefail

settled=0
since=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --settled) settled=1 ;;
    --since) since="${2:?--since EPOCH}"; shift ;;
    *) echo "field/leftovers.sh: unknown argument $1 (--settled, --since EPOCH)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$settled" -eq 1 ]; then
  first="$("$0" ${since:+--since "$since"})"
  sleep 3
  "$0" ${since:+--since "$since"} |
    awk 'NR == FNR { seen[$0]; next } $0 in seen' <(printf '%s\n' "$first") -
  exit 0
fi

# older PID: whether PID has an ancestor below pid 1 (itself excluded) started before $since.
btime="$(awk '/^btime/ {print $2}' /proc/stat)"
hz="$(getconf CLK_TCK)"
older() {
  local pid="$1" ppid start
  while :; do
    ppid="$(awk '{sub(/.*\) /, ""); print $2}' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [ -n "$ppid" ] && [ "$ppid" -gt 1 ] || return 1
    start="$(awk '{sub(/.*\) /, ""); print $20}' "/proc/$ppid/stat" 2>/dev/null)" || return 1
    [ -n "$start" ] || return 1
    if [ $((btime + start / hz)) -lt "$since" ]; then return 0; fi
    pid="$ppid"
  done
}

procs='^(bwrap|firejail|nsjail|srt|node|socat|codex|codex-linux-sa|runc|crun|systemd-nspawn|conmon|sleep|busybox|wedge|wedge-.*|abba|locker-.*)$'
for p in /proc/[0-9]*; do
  comm="$(cat "$p/comm" 2>/dev/null)" || continue
  [[ "$comm" =~ $procs ]] || continue
  # A zombie is already dead; its parent (or init, once orphaned) reaps it.
  [ "$(awk '/^State:/ {print $2}' "$p/status" 2>/dev/null)" != Z ] || continue
  if [ -n "$since" ] && older "${p#/proc/}"; then continue; fi
  args="$(tr '\0\n\t' '   ' <"$p/cmdline" 2>/dev/null | cut -c1-160)" || true
  echo "process $comm[${p#/proc/}]: $args"
done | sort

for d in /tmp /var/tmp /dev/shm; do
  find "$d" -mindepth 1 -maxdepth 1 -printf "path %p\n" 2>/dev/null
done | grep -v -E '^path /tmp/(bash_jobs\.|bash_tool_)' | sort
find /run -mindepth 1 -maxdepth 2 -printf "path %p\n" 2>/dev/null | sort

# Every cgroup directory of every hierarchy (cgroup2 and each v1 one, named ones included): a
# runtime names its cgroups as it likes (runc: the container ID, at each hierarchy's root). The
# only ones left out are the per-command cgroups of this machine's own process launcher
# (memory/process_api/<32 hex>, one per shell command, not the field's); what a runtime nests
# inside one of them is kept, with the launcher's part written HASH.
find /sys/fs/cgroup -mindepth 1 -type d -printf "%p\n" 2>/dev/null |
  sed -E 's#^(/sys/fs/cgroup/memory/process_api/)[0-9a-f]{32}#\1HASH#' |
  grep -vx '/sys/fs/cgroup/memory/process_api/HASH' | sed 's/^/cgroup /' | sort -u

awk '{print "mount " $5}' /proc/self/mountinfo | sort
