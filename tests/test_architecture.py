"""Static checks of the package layout: the acceptance criteria of the architecture cleanup.

a. no import cycle among alpagasus modules (every import at any depth, relative ones too);
b. no top-level module `foo_bar.py` beside a `foo.py` or `foo/` (a family spelled as name prefixes);
c. every module <= 400 lines (devtools/ excepted);
d. every function or method <= 80 lines (devtools/ excepted; in cli/ only the body counts, since typer option
   declarations live in the signature);
e. `import alpagasus` and `alpagasus --help` import neither torch nor transformers (real subprocesses);
f. every subpackage with more than one module has an __init__.py with a docstring and an `__all__`;
g. no module probes a judge's capabilities (getattr/hasattr on a judge);
h. only formats/ and records.py read a format's field names;
i. the engine imports no provider's client (openai, anthropic, httpx, alpagasus.backends): it drives BatchApi.

Each failure lists every violation, with file:line where there is one.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PKG = SRC / "alpagasus"
EXEMPT = PKG / "devtools"  # developer tools: not part of the shipped layout rules
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
HEAVY = ("torch", "transformers")


# ---- the module tree ------------------------------------------------------------------------------------
def _skip_dir(d: Path) -> bool:
    return d.name == "__pycache__" or d.name.startswith(".")


def py_files() -> list[Path]:
    out = []
    for root, dirs, files in os.walk(PKG):
        dirs[:] = sorted(d for d in dirs if not _skip_dir(Path(root) / d))
        out += [Path(root) / f for f in sorted(files) if f.endswith(".py")]
    return out


def rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def module_name(p: Path) -> str:
    parts = list(p.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_dirs() -> list[Path]:
    """Directories under alpagasus/ that hold Python modules (regular packages, or namespace ones by mistake)."""
    return sorted({p.parent for p in py_files()} | {PKG})


def modules() -> dict[str, Path]:
    """Module name -> file; a directory holding .py files but no __init__.py maps to the directory itself."""
    mods = {module_name(p): p for p in py_files()}
    for d in package_dirs():
        mods.setdefault(module_name(d / "__init__.py"), d)
    return mods


def parse(p: Path) -> ast.Module:
    return ast.parse(p.read_text(encoding="utf-8"), filename=str(p))


# ---- a. import cycles -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    where: str  # file:line
    stmt: str


def _existing(name: str, mods: dict[str, Path]) -> str | None:
    """The most specific existing alpagasus module that `name` names (its longest existing prefix)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


def import_edges() -> list[Edge]:
    """Every import of an alpagasus module, at any depth of any file, mapped to the most specific module it
    names. `import a.b.c` counts only the edge to a.b.c (the conventional graph: the __init__ chain it also runs
    makes a cycle only where an __init__ imports back, and that import is an edge of its own)."""
    mods = modules()
    edges = []
    for p in py_files():
        me = module_name(p)
        is_pkg = p.name == "__init__.py"
        tree = parse(p)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = me.split(".") if is_pkg else me.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for a in node.names:
                    sub = f"{origin}.{a.name}"
                    targets.append(sub if a.name != "*" and sub in mods else origin)
            for t in targets:
                if t != "alpagasus" and not t.startswith("alpagasus."):
                    continue
                dst = _existing(t, mods)
                if dst and dst != me:
                    edges.append(Edge(me, dst, f"{rel(p)}:{node.lineno}", ast.unparse(node)))
    return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep graphs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def shortest_cycle(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (BFS)."""
    prev: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ())):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in seen:
                seen.add(w)
                prev[w] = v
                queue.append(w)
    return [start]


def import_cycles() -> list[str]:
    edges = import_edges()
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for e in edges:
        graph[e.src].add(e.dst)
    report = []
    for comp in strongly_connected(graph):
        if len(comp) < 2:
            continue
        members = set(comp)
        lines = [
            f"cycle among {len(comp)} modules: {', '.join(comp)}",
            "  e.g. " + " -> ".join(shortest_cycle(comp[0], graph, members)),
        ]
        for e in sorted(
            {e for e in edges if e.src in members and e.dst in members}, key=lambda e: (e.src, e.dst, e.where)
        ):
            lines.append(f"  {e.src} -> {e.dst}   ({e.where}: {e.stmt})")
        report.append("\n".join(lines))
    return report


def test_graph_helpers_find_cycles_and_only_cycles():
    """The cycle finder itself, on known graphs (so a green (a) means no cycle, not a blind checker)."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}, "g": set()}
    comps = sorted(c for c in strongly_connected(g) if len(c) > 1)
    assert comps == [["a", "b", "c"], ["d", "e"]]
    assert shortest_cycle("a", g, {"a", "b", "c"}) == ["a", "b", "c", "a"]
    chain = {str(i): {str(i + 1)} for i in range(5000)} | {"5000": {"0"}}  # deep: no recursion limit
    assert [len(c) for c in strongly_connected(chain)] == [5001]


def test_import_edges_are_resolved_to_the_most_specific_module():
    edges = import_edges()
    assert edges, "no alpagasus imports found: the scanner is broken"
    mods = modules()
    assert all(e.dst in mods and e.src in mods for e in edges)
    # a relative or absolute `from PACKAGE import SUBMODULE` lands on the submodule, never on the package
    for e in edges:
        d = mods[e.dst]
        if d.name == "__init__.py" or d.is_dir():
            tree = ast.parse(e.stmt)
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
            assert not any(f"{e.dst}.{n}" in mods for n in names), e


def test_a_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, f"{len(cycles)} import cycle(s) among alpagasus modules:\n" + "\n".join(cycles)


# ---- b. families spelled as name prefixes ----------------------------------------------------------------
def prefix_families() -> list[str]:
    top = {p.stem for p in PKG.glob("*.py")} | {d.name for d in PKG.iterdir() if d.is_dir() and not _skip_dir(d)}
    out = []
    for p in sorted(PKG.glob("*.py")):
        if p.stem.startswith("__"):
            continue
        parts = p.stem.split("_")
        for k in range(1, len(parts)):
            head = "_".join(parts[:k])
            if head in top:
                beside = f"{head}.py" if (PKG / f"{head}.py").exists() else f"{head}/"
                out.append(f"{rel(p)} beside src/alpagasus/{beside}: make it a module of the {head} package")
    return out


def test_b_no_prefix_families_at_top_level():
    found = prefix_families()
    assert not found, f"{len(found)} top-level module(s) spelled as a family prefix:\n" + "\n".join(found)


# ---- c. module length ------------------------------------------------------------------------------------
def long_modules() -> list[str]:
    out = []
    for p in py_files():
        if EXEMPT in p.parents:
            continue
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{rel(p)}: {n} lines")
    return out


def test_c_modules_at_most_400_lines():
    found = long_modules()
    assert not found, f"{len(found)} module(s) over {MAX_MODULE_LINES} lines:\n" + "\n".join(found)


# ---- d. function length ----------------------------------------------------------------------------------
def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def function_length(node: ast.FunctionDef | ast.AsyncFunctionDef, body_only: bool) -> int:
    if not body_only:
        return node.end_lineno - node.lineno + 1  # from `def` (decorators not counted) to the last line
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]  # the docstring
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def long_functions() -> list[str]:
    out = []
    for p in py_files():
        if EXEMPT in p.parents:
            continue
        body_only = (PKG / "cli") in p.parents
        for name, node in _functions(parse(p)):
            n = function_length(node, body_only)
            if n > MAX_FUNCTION_LINES:
                out.append(f"{rel(p)}:{node.lineno} {name}: {n} lines" + (" (body)" if body_only else ""))
    return out


def test_function_length_measure():
    src = (
        'def f(\n    a: int = 1,\n    b: int = 2,\n):\n    """Doc\n    string."""\n    x = 1\n\n'
        '    return x\n\n\n@dec\nasync def g():\n    """only a docstring"""\n'
    )
    fns = dict(_functions(ast.parse(src)))
    assert function_length(fns["f"], False) == 9 and function_length(fns["f"], True) == 3
    assert function_length(fns["g"], False) == 2 and function_length(fns["g"], True) == 0
    nested = dict(_functions(ast.parse("class A:\n    def m(self):\n        def inner():\n            pass\n")))
    assert set(nested) == {"A.m", "A.m.<locals>.inner"}


def test_d_functions_at_most_80_lines():
    found = long_functions()
    assert not found, f"{len(found)} function(s) over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


# ---- e. no heavy imports on the light paths --------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


# Runs first in the child: a meta-path finder that, the first time a heavy package is looked up, records the
# stack of the import (statements or importlib calls alike), then lets the normal finders do the import.
SPY = """
import json, sys, traceback
_first = {}
class _Spy:
    def find_spec(self, name, path=None, target=None):
        if name in _HEAVY and name not in _first:
            _first[name] = [(f.filename, f.lineno, f.line) for f in traceback.extract_stack()[:-1]
                            if not f.filename.startswith("<")]
        return None
sys.meta_path.insert(0, _Spy())
"""
REPORT = "\nprint('HEAVY-IMPORTS', json.dumps({m: _first.get(m) for m in _HEAVY if m in sys.modules}))\n"


def describe(stack: list) -> str:
    """The alpagasus frames of an import stack, outermost first, then the first other file it went through."""
    ours = [i for i, (f, _, _) in enumerate(stack) if Path(f).resolve().is_relative_to(PKG)]
    if not ours:
        return "  (not imported from an alpagasus module)"
    lines = [f"  {rel(Path(stack[i][0]).resolve())}:{stack[i][1]}: {stack[i][2]}" for i in ours]
    if ours[-1] + 1 < len(stack):
        lines.append(f"  via {stack[ours[-1] + 1][0]}")
    return "\n".join(lines)


def heavy_imports(code: str) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """Run `code` in a fresh interpreter; return each heavy package left in its sys.modules, with where it was
    imported from."""
    script = f"_HEAVY = {HEAVY!r}\n" + SPY + code + REPORT
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300, cwd=REPO
    )
    assert r.returncode == 0 and "HEAVY-IMPORTS" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
    found = json.loads(r.stdout.rsplit("HEAVY-IMPORTS", 1)[1])
    return {m: describe(stack or []) for m, stack in found.items()}, r


def test_heavy_import_probe_sees_imports():
    """The probe itself: a real import of torch is seen (after an importlib import, so the spy is still in place),
    and a stack is described by its alpagasus frames."""
    found, _ = heavy_imports("import json")
    assert found == {}
    found, _ = heavy_imports("import importlib\nimportlib.import_module('alpagasus.records')\nimport torch")
    assert list(found) == ["torch"] and "not imported from an alpagasus module" in found["torch"]
    stack = [
        ("/usr/lib/python3.11/runpy.py", 1, "x"),
        (str(PKG / "__init__.py"), 6, "from alpagasus import records"),
        (str(PKG / "records.py"), 12, "import peft"),
        ("/venv/site-packages/peft/__init__.py", 3, "import torch"),
    ]
    assert describe(stack).splitlines() == [
        "  src/alpagasus/__init__.py:6: from alpagasus import records",
        "  src/alpagasus/records.py:12: import peft",
        "  via /venv/site-packages/peft/__init__.py",
    ]


def test_e_import_alpagasus_is_light():
    found, _ = heavy_imports("import alpagasus")
    assert not found, "`import alpagasus` imports heavy packages:\n" + "\n".join(
        f"{m}:\n{where}" for m, where in found.items()
    )


def test_e_help_is_light():
    """What the `alpagasus` console script does: alpagasus.cli:main with argv ["--help"]."""
    code = (
        "sys.argv = ['alpagasus', '--help']\nfrom alpagasus.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    found, r = heavy_imports(code)
    assert "Usage" in r.stdout and " rate " in r.stdout, r.stdout[-2000:]
    assert not found, "`alpagasus --help` imports heavy packages:\n" + "\n".join(
        f"{m}:\n{where}" for m, where in found.items()
    )


# ---- f. subpackages declare their surface ----------------------------------------------------------------
def _has_all(tree: ast.Module) -> bool:
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, (ast.AnnAssign, ast.AugAssign))
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


def undeclared_packages() -> list[str]:
    out = []
    for d in package_dirs():
        if d == PKG:
            continue
        children = [p.stem for p in d.glob("*.py") if p.name != "__init__.py"]
        children += [c.name for c in d.iterdir() if c.is_dir() and not _skip_dir(c) and any(c.rglob("*.py"))]
        if len(children) <= 1:
            continue
        init = d / "__init__.py"
        what = f"{rel(d)}/ ({len(children)} modules: {', '.join(sorted(children))})"
        if not init.exists():
            out.append(f"{what}: no __init__.py")
            continue
        tree = parse(init)
        missing = [
            m for m, ok in (("a docstring", bool(ast.get_docstring(tree))), ("__all__", _has_all(tree))) if not ok
        ]
        if missing:
            out.append(f"{what}: __init__.py lacks {' and '.join(missing)}")
    return out


def test_f_subpackages_have_docstring_and_all():
    found = undeclared_packages()
    assert not found, f"{len(found)} subpackage(s) without a declared surface:\n" + "\n".join(found)


# ---- g. capabilities are declared, never probed ---------------------------------------------------------------
def judge_probes() -> list[str]:
    """`getattr(judge, ...)` / `hasattr(judge, ...)` (any first argument whose text names a judge: `judge`,
    `self.judge`, `session.judge`...): a judge's capabilities are attributes it declares (judges/base.py)."""
    out = []
    for p in py_files():
        for node in ast.walk(parse(p)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
                and "judge" in ast.unparse(node.args[0]).lower()
            ):
                out.append(f"{rel(p)}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_g_judge_capabilities_are_not_probed():
    found = judge_probes()
    assert not found, "probes of a judge (declare the capability in judges/base.py instead):\n" + "\n".join(found)


# ---- h. only formats/ reads a format's field names -----------------------------------------------------------
ALPACA_NAMES = ("instruction", "input", "output")
FORMAT_HOMES = ("src/alpagasus/formats/", "src/alpagasus/records.py")  # where a sample's fields are read
# Modules that read OTHER files or templates whose fields happen to carry these names (one reason each):
ALPACA_NAME_ALLOWED = {
    # AlpacaEval annotation files: {instruction, output_1, output_2, preference}, not samples
    "src/alpagasus/judgecheck/references.py": "published verdict files (AlpacaEval annotations, AlpaGasus reviews)",
    "src/alpagasus/compare/lc.py": "AlpacaEval verdicts (alpacaeval.Verdict.instruction) grouped by instruction",
    "src/alpagasus/compare/files.py": "AlpacaEval verdicts (alpacaeval.Verdict.instruction) counted",
    # the selection sidecar's `output`: the selection file's path
    "src/alpagasus/judgecheck/caveats.py": "the .selection.json sidecar's `output` key (a file path)",
    # the bundled test sets (vicuna, koala, wizardlm, sinstruct) and the answers generated for them
    "src/alpagasus/testsets/__init__.py": "the bundled test sets' question files name their question `instruction`",
    "src/alpagasus/generate/backends.py": "test-set questions (testsets.Question), not training samples",
    "src/alpagasus/compare/inputs.py": "test-set question files (Self-Instruct keeps its input in `instances`)",
    # the sidecar's duplicate list keeps its `instruction` snippet key (report/selections.py, existing sidecars)
    "src/alpagasus/select/summary.py": "the .selection.json sidecar's duplicate entries (a prompt snippet)",
}


def alpaca_name_reads(path: Path) -> list[str]:
    """`x.instruction` / `.input` / `.output`, `x["instruction"]`..., `x.get("output")`... in one module."""
    out = []
    for node in ast.walk(parse(path)):
        hit = None
        if isinstance(node, ast.Attribute) and node.attr in ALPACA_NAMES:
            hit = ast.unparse(node)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and node.slice.value in ALPACA_NAMES
        ):
            hit = ast.unparse(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in ALPACA_NAMES
        ):
            hit = ast.unparse(node)
        if hit is not None:
            out.append(f"{rel(path)}:{node.lineno}: {hit}")
    return out


def alpaca_field_readers() -> list[str]:
    """Every read of an Alpaca field name outside formats/ and records.py and the allowlist: the rest of the
    package reads a sample through its views (Example.prompt, .response, .prompt_fields(), formats.example_of)."""
    out = []
    for p in py_files():
        where = rel(p)
        if where.startswith(FORMAT_HOMES) or where in ALPACA_NAME_ALLOWED or p.is_relative_to(EXEMPT):
            continue
        out += alpaca_name_reads(p)
    return out


def test_h_check_sees_alpaca_field_reads(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "a = ex.instruction\nb = row['output']\nc = row.get('input', '')\nd = {'instruction': 1}\ne = ex.prompt\n"
        'f = x.outputs\ng = row["output_1"]\n'
    )
    global REPO
    saved, REPO = REPO, tmp_path  # rel() is relative to REPO
    try:
        got = alpaca_name_reads(probe)
    finally:
        REPO = saved
    assert [g.split(": ", 1)[1] for g in got] == ["ex.instruction", "row['output']", "row.get('input', '')"]


def test_h_only_formats_read_alpaca_field_names():
    for where in ALPACA_NAME_ALLOWED:
        assert (REPO / where).is_file(), f"allowlisted {where} does not exist: remove it from ALPACA_NAME_ALLOWED"
        assert alpaca_name_reads(REPO / where), f"{where} no longer reads the names: remove it from the allowlist"
    found = alpaca_field_readers()
    assert not found, (
        f"{len(found)} read(s) of an Alpaca field name outside formats/ (read the sample's views: Example.prompt, "
        ".response, .prompt_fields(), formats.example_of(row); docs/formats.md):\n" + "\n".join(found)
    )


if __name__ == "__main__":  # python tests/test_architecture.py: print every violation, check by check
    for title, fn in [
        ("a. import cycles", import_cycles),
        ("b. prefix families", prefix_families),
        ("c. long modules", long_modules),
        ("d. long functions", long_functions),
        ("f. undeclared subpackages", undeclared_packages),
        ("g. judge probes", judge_probes),
        ("h. Alpaca field names outside formats/", alpaca_field_readers),
    ]:
        found = fn()
        print(f"== {title}: {len(found)}")
        print("\n".join(found))
    pytest.main(["-q", __file__, "-k", "test_e_"])


# ---- i. the engine imports no provider's client -----------------------------------------------------------
def test_i_engine_imports_no_provider_client():
    """engine/ drives `BatchApi` (engine/batchapi.py); provider clients live in backends/ (imports at any depth)."""
    found = []
    for path in sorted((PKG / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"engine/{path.name}: {n}" for n in names if n.split(".")[0] in ("openai", "anthropic", "httpx")]
            found += [f"engine/{path.name}: {n}" for n in names if n.startswith("alpagasus.backends")]
    assert not found, found
