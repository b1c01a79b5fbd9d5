#!/usr/bin/env bash
# field/leftovers-diff.sh BEFORE AFTER WEDGE_PID: what a field run left on the machine, from two
# field/leftovers.sh snapshots taken around it (AFTER with --settled --since START).
#
# Prints on stdout, one a line, the new items that are the run's to answer for: every new
# process (--since already left out other processes' live work), mount, and cgroup or path
# whose name is a field runtime's or container's (runc, crun, firejail, nsjail, nspawn, srt,
# codex, claude, payload/supervisor, oci-, wf-) or the run's own wedge's (wedge-WEDGE_PID-,
# wedge-trial-WEDGE_PID-). On stderr, prefixed "elsewhere:", the other new files and cgroups:
# another job on a shared machine (a cargo test's /tmp/wedge-cli-*, another wedge's cgroups)
# makes those while the run goes on; wedge itself blames and removes, per trial, every file a
# trial's processes make in /tmp, /var/tmp, /run and /dev/shm, and every cgroup they make.
set -euo pipefail
before="${1:?usage: field/leftovers-diff.sh BEFORE AFTER WEDGE_PID}"
after="${2:?usage: field/leftovers-diff.sh BEFORE AFTER WEDGE_PID}"
wpid="${3:?usage: field/leftovers-diff.sh BEFORE AFTER WEDGE_PID}"
ours="(runc|crun|firejail|nsjail|nspawn|srt|codex|claude|/payload$|/supervisor$|/oci-|/wf-|wedge-$wpid-|wedge-trial-$wpid-)"
awk 'NR == FNR { seen[$0]; next } !($0 in seen)' "$before" "$after" | while IFS= read -r line; do
  case "$line" in
    process\ * | mount\ *) echo "$line" ;;
    *) if [[ "$line" =~ $ours ]]; then echo "$line"; else echo "elsewhere: $line" >&2; fi ;;
  esac
done
