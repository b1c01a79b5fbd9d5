#!/usr/bin/env python3
"""Fails if the modules of a crate depend on each other in a cycle, at any level.

Usage: ci/module-cycles.py [SRC ...] [-v]     (default SRC: harness/src)

A module is a .rs file (`mod.rs`, `lib.rs` and `main.rs` stand for their folder). File A depends
on module B when A's code (comments and the trailing `#[cfg(test)] mod tests` left out) names a
path into B: `crate::b::..`, `super::..`, the members of a `use crate::{..}` group, or a parent
naming one of its child modules by its bare name (`child::item`, `pub use child::X`). Binaries
under `bin/` are leaves and are skipped.

Two levels are checked, and both must be free of cycles:
- files: the graph of every module file;
- folders: for every folder F, the graph whose nodes are F's direct children (files and
  subfolders), with an edge X -> Y when anything inside X depends on anything inside Y.
The second level is what keeps layers honest: two folders may not lean on each other even when
no single pair of files does. Prints each cycle found (one strongly connected component per
line) and exits 1; `-v` also prints every file's dependencies.

Hand-written because the question is this small: cargo-modules answers it too, but needs a
nightly rust-analyzer build and minutes of analysis for what a regex pass does in 50 ms.
"""
import os
import re
import sys


def module_files(src):
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if not n.endswith(".rs"):
                continue
            p = os.path.join(root, n)
            parts = os.path.relpath(p, src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[0] == "bin":
                continue
            files[tuple(parts)] = p
    return files


def code_of(path):
    text = open(path).read()
    i = text.find("#[cfg(test)]\nmod tests")
    if i >= 0:
        text = text[:i]
    # Comments (doc comments included) are not dependencies.
    return re.sub(r"//[^\n]*", "", text)


def resolve(files, path):
    for k in range(len(path), 0, -1):
        if tuple(path[:k]) in files:
            return tuple(path[:k])
    return None


def dependencies(files, mod, path):
    text = code_of(path)
    deps = set()
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)(::\{([^;]*?)\})?", text, re.S):
        segs = [s for s in m.group(2).split("::") if s]
        if m.group(1) == "super":
            # `super` is the parent module, for a folder's mod.rs as for a file.
            prefix = list(mod)[:-1]
            while segs and segs[0] == "super":
                prefix, segs = prefix[:-1], segs[1:]
            segs = prefix + segs
        targets = [segs]
        for item in re.split(r",", m.group(4) or ""):
            first = item.strip().split(" as ")[0].split("::")[0].strip("{} \n")
            if first and first != "self":
                targets.append(segs + [first])
        for t in targets:
            r = resolve(files, t)
            if r is not None and r != mod:
                deps.add(r)
    for key in files:
        if len(key) == len(mod) + 1 and key[: len(mod)] == mod:
            if re.search(r"(?<![:\w])" + key[-1] + r"::", text):
                deps.add(key)
    return deps


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for start in list(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def check(src, verbose):
    files = module_files(src)
    edges = {m: dependencies(files, m, p) for m, p in files.items()}
    name = lambda m: "/".join(m) or "(crate root)"
    if verbose:
        for a in sorted(edges):
            print(f"{src}/{name(a)} -> {', '.join(sorted(name(b) for b in edges[a]))}")
    found = [("files", c) for c in cycles(edges)]
    folders = {k[:i] for k in files for i in range(len(k))}
    for f in sorted(folders):
        level = {}
        for a, ds in edges.items():
            for b in ds:
                if len(a) > len(f) and len(b) > len(f) and a[: len(f)] == f == b[: len(f)]:
                    if a[len(f)] != b[len(f)]:
                        level.setdefault(a[len(f)], set()).add(b[len(f)])
        found += [(f"folder {name(f)}", c) for c in cycles(level)]
    for where, comp in found:
        nodes = ", ".join(c if isinstance(c, str) else name(c) for c in comp)
        print(f"{src}: cycle among {where}: {nodes}")
    return not found


if __name__ == "__main__":
    verbose = "-v" in sys.argv
    srcs = [a for a in sys.argv[1:] if a != "-v"] or ["harness/src"]
    ok = all([check(s, verbose) for s in srcs])
    sys.exit(0 if ok else 1)
