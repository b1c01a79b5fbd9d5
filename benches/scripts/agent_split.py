#!/usr/bin/env python3
# CPU of an agent batch run by role (issue 25, reports/bench.md), from perf samples on stdin.
# usage: perf script -i perf-agent.data -F comm,pid,tid,period -G | agent_split.py SERVE ZYGOTE CLIENT_PIDS_FILE
import sys, collections
serve, zyg = int(sys.argv[1]), int(sys.argv[2])
clients = {int(l) for l in open(sys.argv[3]) if l.strip()}
roles = collections.Counter()
total = 0
for line in sys.stdin:
    parts = line.split()
    if len(parts) < 3:
        continue
    period = int(parts[-1])
    pidtid = parts[-2]
    comm = " ".join(parts[:-2])
    pid = int(pidtid.split('/')[0])
    if pid == serve: role = "agent service (" + ("zygote-client thread" if comm == "zygote-client" else "tokio workers") + ")"
    elif pid == zyg: role = "zygote"
    elif pid in clients: role = "exec client"
    elif comm == "swapper": role = "idle"
    elif comm in ("true",): role = "commands (true, after exec)"
    elif comm == "wedge-agent": role = "build children before exec"
    elif comm.startswith("qemu"): role = "qemu (should be none)"
    else: role = "other (kernel threads, ...)"
    roles[role] += period
    total += period
busy = total - roles["idle"]
for role, p in roles.most_common():
    print(f"{role:40s} {100*p/total:6.2f}% of all, {100*p/busy if role!='idle' else 0:6.2f}% of busy")
