#!/usr/bin/env python3
"""Dependencies between thoughtscope's top-level modules, from the source text.

    python3 scripts/module-graph.py            # the graph as text; exit 1 if it has a cycle
    python3 scripts/module-graph.py --dot      # Graphviz dot

An edge A -> B means some file under crates/thoughtscope/src/A/ (or A.rs) names `crate::B` (in a
`use` or a path). Comments and doc comments are ignored, so an intra-doc link does not count;
`super::` paths stay inside a module and do not count either. The model crate
(crates/thoughtscope-model, re-exported as `thoughtscope::model`) is one node, `model`: a crate of
its own cannot name the modules above it. The binary (src/bin/) is listed as `bin`.
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "crates" / "thoughtscope" / "src"
MODEL = ROOT / "crates" / "thoughtscope-model" / "src"
BIN = ROOT / "src" / "bin"
CRATE_PATH = re.compile(r"\bcrate::(\w+)")
# `use thoughtscope::x` in the binary
LIB_PATH = re.compile(r"\bthoughtscope::(\w+)")
COMMENT = re.compile(r"//.*$")


def top_module(path: Path) -> str:
    if path.is_relative_to(BIN):
        return "bin"
    if path.is_relative_to(MODEL):
        return "model"
    return path.relative_to(SRC).parts[0].removesuffix(".rs")


def edges():
    graph = defaultdict(set)
    graph["model"]  # the model crate: depends on nothing of the library    # `crate::progress` in the library is the model crate's (re-exported).
    alias = {"progress": "model"}
    for path in sorted([*SRC.rglob("*.rs"), *BIN.rglob("*.rs")]):
        source = top_module(path)
        if source in ("lib", "main"):
            continue
        graph[source]
        pattern = LIB_PATH if source == "bin" else CRATE_PATH
        in_use = False
        for line in path.read_text(encoding="utf-8").splitlines():
            code = COMMENT.sub("", line)
            for target in pattern.findall(code):
                target = alias.get(target, target)
                if target != source and target not in ("Error", "Result"):
                    graph[source].add(target)
            # `use crate::{a::x, b::y}` groups spanning lines
            if re.search(r"\buse\s+crate::\{", code):
                in_use = True
            if in_use:
                for target in re.findall(r"[{,]\s*(\w+)::", code):
                    target = alias.get(target, target)
                    if target != source and source != "bin":
                        graph[source].add(target)
                if "};" in code:
                    in_use = False
    return graph


def cycles(graph):
    """Every elementary cycle's node list (small graphs: a DFS per start node)."""
    found = set()
    nodes = sorted(graph)
    for start in nodes:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    found.add(tuple(path))
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return sorted(found)


def layers(graph):
    """Longest-path layering: a module sits one above the highest module it uses."""
    depth = {}

    def visit(node, seen=()):
        if node in depth:
            return depth[node]
        if node in seen:
            return 0
        below = [visit(n, seen + (node,)) for n in graph.get(node, ()) if n in graph]
        depth[node] = 1 + max(below, default=-1)
        return depth[node]

    for node in graph:
        visit(node)
    return depth


def main():
    graph = edges()
    found = cycles(graph)
    if "--dot" in sys.argv:
        print("digraph modules {\n  rankdir=BT;")
        for source in sorted(graph):
            for target in sorted(graph[source]):
                print(f"  {source} -> {target};")
        print("}")
    else:
        depth = layers(graph)
        for node in sorted(graph, key=lambda n: (depth[n], n)):
            uses = ", ".join(sorted(graph[node])) or "-"
            print(f"{depth[node]}  {node:<10} uses {uses}")
        if found:
            print("\ncycles:")
            for cycle in found:
                print("  " + " -> ".join(cycle + (cycle[0],)))
        else:
            print("\nno cycles between top-level modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
