#!/usr/bin/env python3
"""Dependencies between thoughtscope's modules, from the source text.

    python3 scripts/module-graph.py            # the graphs as text; exit 1 if any has a cycle
    python3 scripts/module-graph.py --dot      # the top-level graph as Graphviz dot
    python3 scripts/module-graph.py --folders  # also every folder's graph of sibling modules
    python3 scripts/module-graph.py --crate DIR  # only the folders of the crate whose root is DIR/lib.rs

Two checks:

1. Top-level modules of the library. An edge A -> B means some file under
   crates/thoughtscope/src/A/ (or A.rs) names `crate::B` (in a `use` or a path). The model crate
   (crates/thoughtscope-model, re-exported as `thoughtscope::model`) is one node, `model`: a crate
   of its own cannot name the modules above it. The binary (src/bin/) is listed as `bin`.

2. Sibling modules inside every folder (every module with submodules, crate roots included) of
   the library, the model crate and the binary. An edge a -> b inside folder P means code in P::a
   (or below it) names P::b (or something below it) by any path: `crate::…`, `super::…`,
   `self::…`, in a `use` tree or inline, and also through a re-export (`pub use`) of the folder or
   of any module above (naming `crate::codi::CodiModel` counts as naming the module that defines
   it). A folder's own files using its items, or a folder using its children, are not sibling
   edges. Tests' inline `mod tests` count as part of their file.

Comments, doc comments (an intra-doc link does not count), strings and character literals are
ignored.
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

# The crates whose folders are checked: (name, source folder, root file).
CRATES = [
    ("thoughtscope", SRC, SRC / "lib.rs"),
    ("thoughtscope-model", MODEL, MODEL / "lib.rs"),
    ("thoughtscope (CLI)", BIN / "thoughtscope", BIN / "thoughtscope" / "main.rs"),
]


def top_module(path: Path) -> str:
    if path.is_relative_to(BIN):
        return "bin"
    if path.is_relative_to(MODEL):
        return "model"
    return path.relative_to(SRC).parts[0].removesuffix(".rs")


def edges():
    graph = defaultdict(set)
    graph["model"]  # the model crate: depends on nothing of the library
    # `crate::progress` in the library is the model crate's (re-exported).
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


# --- Sibling modules inside folders -------------------------------------------------------------

CHAR = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'")
RAW_STRING = re.compile(r'b?r(#*)"')


def strip_code(text: str) -> str:
    """The source without comments, strings and character literals (each replaced by a space, so
    braces and paths inside them do not count)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := RAW_STRING.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            i = n if j < 0 else j + len(end)
            out.append(" ")
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append(" ")
        elif c == "'" and (m := CHAR.match(text, i)):
            i = m.end()
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree: str):
    """`a::{b, c::{d, e as f}, g::*}` → [(["a","b"], "b"), (["a","c","d"], "d"), (["a","c","e"], "f"), …]."""
    tokens = re.findall(r"::|[{},*]|\w+", tree)
    pos = 0

    def parse(prefix):
        nonlocal pos
        results = []
        path = list(prefix)
        while pos < len(tokens):
            t = tokens[pos]
            if t == "{":
                pos += 1
                while pos < len(tokens) and tokens[pos] != "}":
                    results.extend(parse(path))
                    if pos < len(tokens) and tokens[pos] == ",":
                        pos += 1
                pos += 1
                return results
            if t in (",", "}"):
                break
            if t == "::":
                pos += 1
                continue
            if t == "as":
                alias = tokens[pos + 1] if pos + 1 < len(tokens) else "_"
                pos += 2
                return results + [(path, alias)]
            if t == "*":
                pos += 1
                return results + [(path + ["*"], "*")]
            path = path + [t]
            pos += 1
        if path and path[-1] == "self":
            return results + [(path[:-1], path[-2] if len(path) > 1 else "self")]
        return results + [(path, path[-1] if path else "")]

    return parse([])


USE = re.compile(r"\b(pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]+);")
INLINE_PATH = re.compile(r"\b(?:crate|super|self)(?:\s*::\s*\w+)+")
INLINE_MOD = re.compile(r"\bmod\s+(\w+)\s*\{")


class Crate:
    def __init__(self, name, src: Path, root: Path):
        self.name = name
        self.files = {}  # module path (tuple) → file
        for path in sorted(src.rglob("*.rs")):
            rel = path.relative_to(src).with_suffix("").parts
            if path == root:
                module = ()
            elif rel[-1] == "mod":
                module = rel[:-1]
            else:
                module = rel
            if path != root and path.parent == src and path.name in ("lib.rs", "main.rs"):
                continue
            self.files[module] = path
        self.modules = set(self.files)
        self.code = {m: strip_code(p.read_text(encoding="utf-8")) for m, p in self.files.items()}
        self.reexports = defaultdict(dict)  # module → {name: absolute path}
        for module, code in self.code.items():
            for vis, tree in USE.findall(code):
                if not vis:
                    continue
                for path, name in expand_use(tree):
                    absolute = self.absolute(module, path)
                    if absolute is not None and name != "*":
                        self.reexports[module][name] = absolute

    def absolute(self, module, path):
        """The crate-absolute form of `path` named in `module`; None for another crate's."""
        if not path:
            return None
        head, rest = path[0], list(path[1:])
        if head == "crate":
            return rest
        if head == "self":
            return list(module) + rest
        if head == "super":
            base = list(module)
            base = base[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            return base + rest
        if tuple(module) + (head,) in self.modules:
            return list(module) + list(path)
        return None

    def defining_module(self, absolute, depth=0):
        """The module that `absolute` names or defines it, following re-exports."""
        prefix = []
        for i, part in enumerate(absolute):
            if tuple(prefix + [part]) in self.modules:
                prefix.append(part)
                continue
            target = self.reexports.get(tuple(prefix), {}).get(part)
            if target is not None and depth < 8 and target != absolute[: i + 1]:
                return self.defining_module(target + absolute[i + 1 :], depth + 1)
            break
        return tuple(prefix)

    def sibling_edges(self):
        """{folder: {a: {b, …}}} for every folder's sibling modules."""
        graphs = defaultdict(lambda: defaultdict(set))
        for module, code in self.code.items():
            # Inline `mod x { … }` blocks: code inside belongs to module + (x,).
            opens = {m.end() - 1: m.group(1) for m in INLINE_MOD.finditer(code)}
            depth, stack, spans = 0, [], []  # spans: (start, end, inline path)
            for i, c in enumerate(code):
                if c == "{":
                    depth += 1
                    if i in opens:
                        stack.append((opens[i], depth, i))
                elif c == "}":
                    if stack and stack[-1][1] == depth:
                        name, _, start = stack.pop()
                        spans.append((start, i, [s[0] for s in stack] + [name]))
                    depth -= 1

            def module_at(offset):
                inner = [s for s in spans if s[0] <= offset <= s[1]]
                deepest = max(inner, key=lambda s: len(s[2]), default=None)
                return tuple(module) + tuple(deepest[2]) if deepest else tuple(module)

            named = []
            for m in USE.finditer(code):
                here = module_at(m.start())
                named.extend((here, path) for path, _ in expand_use(m.group(2)))
            without_use = USE.sub(lambda m: " " * len(m.group(0)), code)
            for m in INLINE_PATH.finditer(without_use):
                named.append((module_at(m.start()), re.sub(r"\s", "", m.group(0)).split("::")))
            for here, path in named:
                absolute = self.absolute(here, path)
                if absolute is None:
                    continue
                target = self.defining_module(absolute)
                common = 0
                while common < min(len(here), len(target)) and here[common] == target[common]:
                    common += 1
                if common < len(here) and common < len(target):
                    graphs[target[:common]][here[common]].add(target[common])
        return graphs


def folder_cycles():
    """[(crate, folder, cycle)] over every folder of every crate, and the graphs."""
    found, graphs = [], {}
    for name, src, root in CRATES:
        crate = Crate(name, src, root)
        for folder, graph in sorted(crate.sibling_edges().items()):
            graphs[(name, folder)] = graph
            for cycle in cycles(graph):
                found.append((name, folder, cycle))
    return found, graphs


def check_one_crate(src: Path):
    """`--crate DIR`: the folder check alone, on the crate rooted at DIR/lib.rs."""
    if not (src / "lib.rs").is_file():
        print(f"{src}: no lib.rs", file=sys.stderr)
        return 2
    crate = Crate(src.name, src, src / "lib.rs")
    found = [(folder, cycle) for folder, graph in sorted(crate.sibling_edges().items()) for cycle in cycles(graph)]
    for folder, cycle in found:
        print(f"  {'::'.join(folder) or '(crate root)'}: " + " -> ".join(cycle + (cycle[0],)))
    if not found:
        print("no cycles inside folders")
    return 1 if found else 0


def main():
    if "--crate" in sys.argv:
        return check_one_crate(Path(sys.argv[sys.argv.index("--crate") + 1]))
    graph = edges()
    found = cycles(graph)
    if "--dot" in sys.argv:
        print("digraph modules {\n  rankdir=BT;")
        for source in sorted(graph):
            for target in sorted(graph[source]):
                print(f"  {source} -> {target};")
        print("}")
        return 1 if found else 0
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
    inside, graphs = folder_cycles()
    if "--folders" in sys.argv:
        for (crate, folder), sibling_graph in graphs.items():
            print(f"\n{crate} {'::'.join(folder) or '(crate root)'}:")
            for node in sorted(sibling_graph):
                print(f"  {node:<16} uses {', '.join(sorted(sibling_graph[node]))}")
    if inside:
        print("\ncycles inside folders:")
        for crate, folder, cycle in inside:
            where = "::".join(folder) or "(crate root)"
            print(f"  {crate} {where}: " + " -> ".join(cycle + (cycle[0],)))
    else:
        print(f"no cycles inside folders ({len(graphs)} folders with sibling edges, {len(CRATES)} crates)")
    return 1 if found or inside else 0


if __name__ == "__main__":
    sys.exit(main())
