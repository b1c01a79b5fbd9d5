#!/usr/bin/env python3
"""Lists, for every .rs file under SRC (default harness/src), the crate modules it names (crate::
and super:: paths, `use` groups, a parent naming a child module), and prints every pair of files
that import each other. -v prints each file's imports too. Usage: ci/import-pairs.py [SRC] [-v]"""
import os, re, sys
src = sys.argv[1] if len(sys.argv) > 1 else "harness/src"
files = {}
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, src)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[0] == "bin":
                continue
            files[tuple(parts)] = p
def strip_tests(text):
    i = text.find("#[cfg(test)]\nmod tests")
    return text if i < 0 else text[:i]
def resolve(path):
    # longest prefix that is a module file
    for k in range(len(path), -1, -1):
        if tuple(path[:k]) in files:
            return tuple(path[:k])
    return None
edges = {}
for mod, p in files.items():
    text = strip_tests(open(p).read())
    deps = set()
    # expand `use crate::{a, b::c}` groups crudely: collect every crate::x::y path, plus group members
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)(::\{([^;]*?)\})?", text, re.S):
        base = m.group(1)
        segs = [s for s in m.group(2).split("::") if s]
        if base == "super":
            own = list(mod) if not p.endswith(("mod.rs",)) else list(mod) + ["_"]
            prefix = own[:-1]
            while segs and segs[0] == "super":
                prefix = prefix[:-1]; segs = segs[1:]
            segs = prefix + segs
        targets = [segs]
        if m.group(4):
            for item in re.split(r",", m.group(4)):
                item = item.strip().split(" as ")[0]
                if not item or item == "self": continue
                first = item.split("::")[0].strip("{} \n")
                if first:
                    targets.append(segs + [first])
        for t in targets:
            r = resolve(t)
            if r is not None and r != mod and r != ():
                deps.add(r)
    # A parent naming its child modules by their bare names (`html::render`, `use spec::X`).
    for key in files:
        if len(key) == len(mod) + 1 and key[:len(mod)] == mod:
            if re.search(r"(?<![:\w])" + key[-1] + r"::", text):
                deps.add(key)
    edges[mod] = deps
def name(m): return files[m]
pairs = set()
for a, ds in edges.items():
    for b in ds:
        if a in edges.get(b, ()) and (b, a) not in pairs:
            pairs.add((a, b))
if "-v" in sys.argv:
    for a in sorted(edges):
        print(name(a), "->", ", ".join(sorted(name(b) for b in edges[a])))
for a, b in sorted(pairs):
    print(f"cycle: {name(a)} <-> {name(b)}")
