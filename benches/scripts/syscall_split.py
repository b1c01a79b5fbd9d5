#!/usr/bin/env python3
# Splits one thread name's samples by the system call (or user-space library) they fell in, from
# `perf script -F comm,tid,period,ip,sym,dso` on stdin; prints µs per exec for N execs.
import sys, re, collections
comm_want, execs = sys.argv[1], int(sys.argv[2])
total = collections.Counter()
cur = None; frames = []
def flush():
    if cur is None: return
    comm, period = cur
    if comm != comm_want: return
    key = None
    if frames and frames[0][1] == '[kernel.kallsyms]':
        for sym, dso in frames:
            m = re.match(r'(?:__x64_sys_|__do_sys_|__se_sys_|do_sys_)(\w+)', sym)
            if m: key = 'kernel: ' + m.group(1).replace('openat2', 'openat'); break
            if sym.startswith('entry_SYSCALL'): break
        if key is None:
            key = 'kernel: other (' + ('syscall entry/exit' if any(s.startswith('entry_SYSCALL') or 'syscall_exit' in s for s,_ in frames) else 'irq, faults, scheduling') + ')'
    elif frames:
        dso = frames[0][1]
        key = 'user: ' + dso.split('/')[-1].strip('()')
    else:
        key = 'unknown'
    total[key] += period
for line in sys.stdin:
    if not line.strip():
        flush(); cur = None; frames = []; continue
    if not line.startswith((' ', '\t')):
        parts = line.split()
        # comm may contain spaces; the period is the last integer before the event name
        m = re.match(r'^\s*(.+?)\s+\d+\s+(\d+)\s', line)
        cur = (m.group(1), int(m.group(2))) if m else None
        frames = []
    else:
        m = re.match(r'\s*[0-9a-f]+\s+(.+?)\s+\((.*)\)\s*$', line)
        if m:
            sym = re.sub(r'\+0x[0-9a-f]+$', '', m.group(1)); frames.append((sym, m.group(2)))
flush()
ns = sum(total.values())
print(f"{comm_want}: {ns/1e3/execs:.1f} µs of CPU per exec ({execs} execs)")
for k, v in total.most_common():
    print(f"  {v/1e3/execs:6.2f} µs  {k}")
