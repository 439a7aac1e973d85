"""The shape of the tree, read from the source with `ast` (no module is imported or run).

(a) no module under papers/<a>/ imports papers.<b> for another paper b;
(b) the import graph of common/ + papers/ has no cycle (module-level and function-level imports both
    count: a lazy import inside a function does not hide a cycle);
(c) no module under common/ or papers/ is over MAX_LINES lines;
(d) no `print(` in library modules of common/ (a CLI's `main()` may print: that is its output);
(e) the paper list, `common.results.PAPERS`, names exactly the folders under papers/ (the Makefile
    reads the folders);
(f) metrics/ (the `evaluate` modules, loaded by path) and lm_eval_tasks/ (lm-eval task code) sit on top: common/
    and papers/ never import them, and one of them never imports another or more than one paper.
(a)-(c) cover metrics/ and lm_eval_tasks/ too.
Each failure names the offending file:line.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "papers", "metrics", "lm_eval_tasks")
TOP = ("metrics", "lm_eval_tasks")  # wrappers for other tools' users: nothing below imports them
MAX_LINES = 450
CLI_FUNCTIONS = {"main"}


def modules() -> dict[str, Path]:
    """Dotted name -> file for every module of PACKAGES."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def imported_names(module: str, path: Path) -> list[tuple[str, ast.AST]]:
    """Every module name an `import` / `from ... import` anywhere in the file may load, with its node.

    `from a.b import c` yields a.b and a.b.c (c may be a submodule); relative imports are resolved
    against `module`'s package."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((target, node))
            out.extend((f"{target}.{alias.name}", node) for alias in node.names)
    return out


def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported module of common/papers: file:line of the first import}."""
    mods = modules()
    graph: dict[str, dict[str, str]] = {}
    for module, path in mods.items():
        edges: dict[str, str] = {}
        for name, node in imported_names(module, path):
            if name in mods and name != module:
                edges.setdefault(name, where(path, node))
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(set(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for scc in sccs:  # walk inside the component from its first module back to it
        start = min(scc)
        path, seen = [start], {start}
        while True:
            nxt = next(w for w in sorted(graph[path[-1]]) if w in scc and (w == start or w not in seen))
            if nxt == start:
                break
            path.append(nxt)
            seen.add(nxt)
        cycles.append(path)
    return cycles


def test_no_paper_imports_another_paper():
    offences = []
    for module, path in modules().items():
        parts = module.split(".")
        if parts[0] != "papers" or len(parts) < 2:
            continue
        flagged = set()
        for name, node in imported_names(module, path):
            target = name.split(".")
            if target[0] == "papers" and len(target) > 1 and target[1] != parts[1] and node not in flagged:
                flagged.add(node)  # one line per import statement
                offences.append(f"{where(path, node)}: papers.{parts[1]} imports {name}")
    assert not offences, "cross-paper imports:\n" + "\n".join(offences)


def test_import_graph_has_no_cycle():
    graph = import_graph()
    cycles = find_cycles(graph)
    report = []
    for cycle in cycles:
        hops = [f"  {a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, [*cycle[1:], cycle[0]])]
        report.append("cycle:\n" + "\n".join(hops))
    assert not cycles, "\n".join(report)


def test_no_module_is_over_the_line_limit():
    long = []
    for path in modules().values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}:{n}: {n} lines (at most {MAX_LINES})")
    assert not long, "split these modules:\n" + "\n".join(long)


def _cli_ranges(tree: ast.Module) -> list[tuple[int, int]]:
    return [
        (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in CLI_FUNCTIONS
    ]


def test_no_print_in_common_library_code():
    prints = []
    for module, path in modules().items():
        if not module.startswith("common"):
            continue
        tree = parse(path)
        cli = _cli_ranges(tree)
        for node in ast.walk(tree):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if call and node.func.id == "print" and not any(a <= node.lineno <= b for a, b in cli):
                prints.append(f"{where(path, node)}: print( outside main(); use logging")
    assert not prints, "print in library code:\n" + "\n".join(prints)


def test_the_paper_list_is_the_paper_folders():
    tree = parse(ROOT / "common" / "results.py")
    listed = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAPERS" for t in node.targets)
    )
    folders = {p.parent.name for p in (ROOT / "papers").glob("*/claims.yaml")}
    assert set(listed) == folders, f"common/results.py PAPERS {sorted(listed)} != papers/*/ {sorted(folders)}"


def top_offences(mods: dict[str, Path]) -> list[str]:
    """(f): an import of metrics/ or lm_eval_tasks/ from below, between two of them, or of two papers."""
    offences = []
    for module, path in mods.items():
        top = module.split(".")[0]
        own = ".".join(module.split(".")[:2])
        flagged, papers = set(), set()
        for name, node in imported_names(module, path):
            target = name.split(".")
            below_imports_top = top not in TOP and target[0] in TOP
            sibling = top in TOP and target[0] in TOP and not name.startswith(own)
            if (below_imports_top or sibling) and node not in flagged:
                flagged.add(node)
                offences.append(f"{where(path, node)}: {module} imports {name}")
            if top in TOP and target[0] == "papers" and len(target) > 1:
                papers.add(target[1])
        if len(papers) > 1:
            offences.append(f"{path.relative_to(ROOT)}: {module} imports papers {sorted(papers)}")
    return offences


def test_metrics_and_tasks_sit_on_top():
    offences = top_offences(modules())
    assert not offences, "imports of or between metrics/ and lm_eval_tasks/:\n" + "\n".join(offences)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The cycle finder and the import reader on a known graph, so a pass above means something."""
    graph = {"a": {"b": "x:1"}, "b": {"c": "x:2"}, "c": {"a": "x:3"}, "d": {"a": "x:4"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b": "x:1"}, "b": {}}) == []
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    from common.stages import runs_dir\n    from . import sib\n")
    names = [n for n, _ in imported_names("papers.x.m", src)]
    assert names == ["os", "common.stages", "common.stages.runs_dir", "papers.x", "papers.x.sib"]


def test_the_top_rule_catches_what_it_looks_for(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    files = {
        "common.a": "from metrics.m.m import X\n",
        "metrics.m.m": "from common.a import Y\nfrom papers.p.s import f\n",
        "metrics.n.n": "from metrics.m.m import X\nimport papers.p.s\nimport papers.q.s\n",
        "lm_eval_tasks.t.utils": "from papers.q.s import g\n",
    }
    mods = {}
    for module, text in files.items():
        path = tmp_path / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        mods[module] = path
    assert top_offences(mods) == [
        "common/a.py:1: common.a imports metrics.m.m",
        "metrics/n/n.py:1: metrics.n.n imports metrics.m.m",
        "metrics/n/n.py: metrics.n.n imports papers ['p', 'q']",
    ]
