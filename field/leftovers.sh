#!/usr/bin/env bash
# Prints what a sandbox runtime could leave behind, one item a line, sorted, so two snapshots
# diff cleanly:
#
#   field/leftovers.sh >before; ...; field/leftovers.sh >after; diff before after
#
# Items: processes of the runtimes and of the field's commands (comm and argv), entries in /tmp,
# /var/tmp, /run (two levels), /dev/shm, cgroup directories under every hierarchy that mention a
# runtime or wedge, and mount points. Only reads; never changes anything.
set -euo pipefail

procs='^(bwrap|firejail|nsjail|srt|node|socat|codex|codex-linux-sa|runc|crun|systemd-nspawn|conmon|sleep|busybox|wedge|wedge-.*|abba|locker-.*)$'
for p in /proc/[0-9]*; do
  comm="$(cat "$p/comm" 2>/dev/null)" || continue
  [[ "$comm" =~ $procs ]] || continue
  # A zombie is already dead; its parent (or init, once orphaned) reaps it.
  [ "$(awk '/^State:/ {print $2}' "$p/status" 2>/dev/null)" != Z ] || continue
  args="$(tr '\0\n\t' '   ' <"$p/cmdline" 2>/dev/null | cut -c1-160)" || true
  echo "process $comm[${p#/proc/}]: $args"
done | sort

for d in /tmp /var/tmp /dev/shm; do
  find "$d" -mindepth 1 -maxdepth 1 -printf "path %p\n" 2>/dev/null
done | grep -v -E '^path /tmp/(bash_jobs\.|bash_tool_)' | sort
find /run -mindepth 1 -maxdepth 2 -printf "path %p\n" 2>/dev/null | sort

find /sys/fs/cgroup -mindepth 1 -type d \
  \( -iname '*wedge*' -o -iname '*runc*' -o -iname '*crun*' -o -iname '*nspawn*' \
  -o -iname '*machine*' -o -iname '*firejail*' -o -iname '*nsjail*' -o -iname '*field*' -o -name payload -o -name supervisor \) \
  -printf "cgroup %p\n" 2>/dev/null | sort

awk '{print "mount " $5}' /proc/self/mountinfo | sort
