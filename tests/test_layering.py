"""The package's import rules, read from the source with ``ast``.

Every ``import`` / ``from ... import`` statement of every module of ``crossgap_jax`` counts,
function-local ones included, and so do imports under ``if TYPE_CHECKING:`` (an annotation
names its module: a cycle through one is still a cycle of the design) and literal
``importlib.import_module("crossgap_jax....")`` strings. The rules:

* Layers, bottom to top::

      data -> models -> inversion, baselines -> retrieval -> pipeline, train, bench
        -> cli, demo, experiment

  A module imports only modules of its own layer or of layers to its left. ``train``
  (training the small models) and ``bench`` (benchmark helpers) are applications of the
  library beside ``pipeline``; ``demo`` and ``experiment`` (training and measuring the
  controlled experiment's models) are entry points beside ``cli``.
* Leaf utilities (``fileio``) import nothing of the package and may be imported anywhere.
  ``from crossgap_jax import __version__`` reads package metadata and is allowed anywhere.
  The package face ``crossgap_jax/__init__.py`` sits above everything.
* No import cycle between modules (sub-package ``__init__`` faces included).
* Sub-packages meet through their faces: code of one sub-package imports names of another
  (``data``, ``models``, ``inversion``, ``baselines``, ``retrieval``, ``pipeline``) from
  that package's ``__init__`` (``from crossgap_jax.models import CLIP``), never from its
  internal modules; every name so imported is exported by the face. Inside a sub-package,
  imports stay direct (``from crossgap_jax.models.configs import ...``).
* Imports sit at the top of their module. A function-local import is only of an optional or
  heavy third-party module (:data:`LAZY_OK`), or carries a ``# lazy: <reason>`` comment on
  its line or the line above (the reason: a real cycle, settings read at import, ...).

Violations that remain in code owned by other areas are listed in :data:`ALLOWED_LAYER` and
:data:`ALLOWED_CYCLES`, each with its reason and owner; an entry that no longer occurs is
reported as a warning (not a failure, so that branches fixing them can merge in any order).
"""

from __future__ import annotations

import ast
import pathlib
import warnings

PKG = "crossgap_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PKG

LAYERS: dict[str, int] = {
    "retrieval": -1,  # a leaf: metrics and relevance as pure functions, imports no layer
    "data": 0,
    "models": 1,
    "inversion": 2, "baselines": 2,
    "pipeline": 4, "train": 4, "bench": 4,
    "cli": 5, "demo": 5, "experiment": 5,
}
LEAVES = {"fileio"}
FACE = PKG  # the top-level package face: above every layer

# (importing module, imported module): layer violations still present, with the reason and
# the owner expected to clear them. The lead clears this list after the round.
ALLOWED_LAYER: dict[tuple[str, str], str] = {}

# Import cycles between modules still present (each as the sorted tuple of its modules).
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {}

# Sub-packages with a face (``__init__``) other packages import through.
FACED = ("data", "models", "inversion", "baselines", "retrieval", "pipeline")
# Sub-modules that are public as modules, reached through the face as a module.
PUBLIC_SUBMODULES: dict[str, str] = {
    f"{PKG}.models.{fam}.model": "a model family's module: the forward the model owns (family_of)"
    for fam in ("clip", "siglip", "slip", "dinov2", "dinov3")
}
# (importing module, module.name reached past a face): still present, with reason and owner.
ALLOWED_PAST_FACE: dict[tuple[str, str], str] = {}

# Third-party modules a function may import locally: optional dependencies (extras ``torch``
# / ``tfds`` / ``test`` in pyproject.toml, or not declared at all) and hard dependencies
# too slow to import with ``import crossgap_jax`` (scikit-learn ~1.9 s, matplotlib ~0.7 s
# on this machine), used by one command each.
LAZY_OK = frozenset({
    "torch", "torchmetrics", "tensorflow_datasets", "tensorflow", "array_record", "pyarrow",
    "open_clip", "matplotlib", "sklearn",
})
LAZY_MARK = "# lazy:"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, pathlib.Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of the statements inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def _imports(name: str, runtime_only: bool = False) -> list[tuple[str, int]]:
    """``(imported module of the package, line)`` for every import statement of ``name``
    (``runtime_only``: without those under ``if TYPE_CHECKING:``, which never execute).

    ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module, else
    ``pkg``; relative imports are resolved against ``name``.
    """
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"), str(MODULES[name]))
    out: list[tuple[str, int]] = []
    skip = _type_checking_lines(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == PKG]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if _is_package(name) else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PKG:
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                if sub in MODULES:
                    out.append((sub, node.lineno))
                elif mod == PKG and alias.name.startswith("__"):
                    continue  # package metadata (__version__): no dependency on a layer
                else:
                    out.append((mod, node.lineno))
        elif (isinstance(node, ast.Call) and _is_import_module(node.func) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and node.args[0].value.split(".")[0] == PKG):
            out.append((node.args[0].value, node.lineno))  # importlib.import_module("...")
    return out


def _is_import_module(func: ast.expr) -> bool:
    """Whether a call's function is ``importlib.import_module`` / ``import_module``."""
    return ((isinstance(func, ast.Attribute) and func.attr == "import_module")
            or (isinstance(func, ast.Name) and func.id == "import_module"))


def _existing(mod: str) -> str:
    """The nearest module of the package that ``mod`` names (``a.b.c`` -> ``a.b``)."""
    while mod not in MODULES:
        mod = mod.rpartition(".")[0]
    return mod


GRAPH: dict[str, list[tuple[str, int]]] = {
    m: [(_existing(t), ln) for t, ln in _imports(m)] for m in MODULES
}
# What executes (without the ``if TYPE_CHECKING:`` imports). The cycle rule uses GRAPH: an
# annotation-only import (``pipeline.measure`` naming the ``Run`` it is given) never runs,
# but a cycle through it is still two modules that each need the other.
RUNTIME_GRAPH: dict[str, list[tuple[str, int]]] = {
    m: [(_existing(t), ln) for t, ln in _imports(m, runtime_only=True)] for m in MODULES
}


def _area(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else FACE


def test_every_module_is_in_a_layer():
    """A new sub-package or top-level module must be given a place in the rules."""
    unknown = sorted({_area(m) for m in MODULES} - set(LAYERS) - LEAVES - {FACE})
    assert not unknown, f"add {unknown} to LAYERS (or LEAVES) in tests/test_layering.py"


def _layer_violations() -> dict[tuple[str, str], int]:
    bad: dict[tuple[str, str], int] = {}
    for mod, targets in GRAPH.items():
        src = _area(mod)
        for tgt, line in targets:
            dst = _area(tgt)
            if src == dst or src == FACE or dst in LEAVES:
                continue
            if src in LEAVES or dst == FACE or LAYERS[dst] > LAYERS[src]:
                bad.setdefault((mod, tgt), line)
    return bad


def test_layers_import_only_to_their_left():
    bad = _layer_violations()
    new = {k: v for k, v in bad.items() if k not in ALLOWED_LAYER}
    assert not new, "imports against the layering (data -> models -> inversion/baselines -> " \
        "retrieval -> pipeline/train/bench -> cli/demo):\n" + "\n".join(
            f"  {MODULES[a].relative_to(ROOT.parent)}:{ln}: {a} imports {b}"
            for (a, b), ln in sorted(new.items()))
    stale = sorted(set(ALLOWED_LAYER) - set(bad))
    if stale:  # a warning, not a failure: other branches fix these while this one merges
        warnings.warn(f"fixed, remove from ALLOWED_LAYER: {stale}", stacklevel=1)


def _cycles() -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan), sorted tuples."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[tuple[str, ...]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in GRAPH[v]:
            if w == v:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return sorted(out)


def _without_faces(cycle: tuple[str, ...]) -> bool:
    """Whether the cycle remains once sub-package faces are ignored.

    ``pkg/__init__.py`` re-exporting ``pkg.mod`` while ``pkg.mod`` imports a sibling through
    ``pkg`` is a real cycle too, so faces are not ignored by the main test; this helper
    only makes the failure message say which kind it is."""
    return all(not _is_package(m) for m in cycle)


def test_no_import_cycles():
    cycles = _cycles()
    new = [c for c in cycles if c not in ALLOWED_CYCLES]
    assert not new, "import cycles between modules:\n" + "\n".join(
        f"  {' <-> '.join(c)}" + ("" if _without_faces(c) else "  (through a package face)")
        for c in new)
    stale = sorted(set(ALLOWED_CYCLES) - set(cycles))
    if stale:
        warnings.warn(f"fixed, remove from ALLOWED_CYCLES: {stale}", stacklevel=1)


def _past_faces(path: pathlib.Path, area: str | None) -> list[tuple[int, str, str]]:
    """``(line, sub-package, module.name)`` for each name ``path`` imports from a module
    inside another faced sub-package rather than from its face (``area``: the importing
    module's own sub-package). ``from crossgap_jax.pipeline.measure import measure`` (a
    function named as its module, which the face cannot export without shadowing the
    module) and :data:`PUBLIC_SUBMODULES` are not counted."""
    out: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            parts = node.module.split(".")
            if parts[0] != PKG or len(parts) < 2 or parts[1] not in FACED or parts[1] == area:
                continue
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in PUBLIC_SUBMODULES:
                    continue
                if len(parts) == 2:
                    if target in MODULES:  # a sub-module reached through the face
                        out.append((node.lineno, parts[1], target))
                elif alias.name != parts[-1]:
                    out.append((node.lineno, parts[1], target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if (parts[0] == PKG and len(parts) > 2 and parts[1] in FACED
                        and parts[1] != area and alias.name not in PUBLIC_SUBMODULES):
                    out.append((node.lineno, parts[1], alias.name))
    return out


def test_sub_packages_import_each_other_through_their_faces():
    """Names of another sub-package come from its face."""
    bad = []
    for name, path in MODULES.items():
        for line, _, target in _past_faces(path, _area(name)):
            if (name, target) not in ALLOWED_PAST_FACE:
                bad.append(f"  {path.relative_to(ROOT.parent)}:{line}: {target}")
    assert not bad, ("import these from the sub-package's face (export them there if "
                     "needed):\n" + "\n".join(bad))


def _face_imports(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """``(line, face, name)`` for each ``from crossgap_jax.<face> import name``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            parts = node.module.split(".")
            if parts[0] == PKG and len(parts) == 2 and parts[1] in FACED:
                out += [(node.lineno, parts[1], a.name) for a in node.names]
    return out


def test_faces_export_what_other_code_imports():
    """Every name imported from a face exists there, and every public name the benchmarks
    (outside the package, free to import internals) take from a faced sub-package's module
    is exported by its face too, so the import can move to it."""
    import importlib

    missing = []
    bench = sorted((ROOT.parent / "benchmarks").glob("*.py"))
    sources = [(_area(m), p) for m, p in MODULES.items()] + [(None, p) for p in bench]
    for area, path in sources:
        for line, face, name in _face_imports(path):
            if face == area or f"{PKG}.{face}.{name}" in MODULES:
                continue
            if not hasattr(importlib.import_module(f"{PKG}.{face}"), name):
                missing.append(f"  {path.relative_to(ROOT.parent)}:{line}: {face}.{name}")
    for path in bench:
        for line, face, target in _past_faces(path, None):
            name = target.rpartition(".")[2]
            if not name.startswith("_") and target not in MODULES and not hasattr(
                    importlib.import_module(f"{PKG}.{face}"), name):
                missing.append(f"  {path.relative_to(ROOT.parent)}:{line}: {target}")
    assert not missing, "names the faces do not export:\n" + "\n".join(missing)


def test_the_face_check_sees_violations(tmp_path):
    """Deep, sub-module and plain-import reaches are reported; face imports, a function
    named as its module and the public family modules are not."""
    src = tmp_path / "m.py"
    src.write_text(
        "from crossgap_jax.models.bundle import CLIP\n"
        "from crossgap_jax.models import CLIP; from crossgap_jax.models.clip import model\n"
        "from crossgap_jax.data import loader\n"
        "from crossgap_jax.pipeline.measure import measure\n"
        "import crossgap_jax.retrieval.metrics\n"
        "from crossgap_jax.inversion.core import HParams\n")
    assert _past_faces(src, "train") == [
        (1, "models", "crossgap_jax.models.bundle.CLIP"),
        (3, "data", "crossgap_jax.data.loader"),
        (5, "retrieval", "crossgap_jax.retrieval.metrics"),
        (6, "inversion", "crossgap_jax.inversion.core.HParams")]
    assert _past_faces(src, "inversion")[-1][1] == "retrieval"  # own package: direct is fine


def _function_local_imports(source: str) -> list[tuple[int, str, bool]]:
    """``(line, imported module, marked)`` of every import inside a function body of
    ``source`` (``marked``: a ``# lazy:`` comment on its first line or the line above, or
    it directly follows a marked one in the same block, as a group)."""
    lines = source.splitlines()
    out: list[tuple[int, str, bool]] = []

    def marked(node: ast.stmt) -> bool:
        return any(LAZY_MARK in lines[i - 1]
                   for i in (node.lineno, node.lineno - 1) if 0 < i <= len(lines))

    def visit(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            prev_marked = False
            for stmt in block:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)) and in_function:
                    mods = ([a.name for a in stmt.names] if isinstance(stmt, ast.Import)
                            else ["." * stmt.level + (stmt.module or "")])
                    is_marked = marked(stmt) or prev_marked
                    out.extend((stmt.lineno, m, is_marked) for m in mods)
                    prev_marked = is_marked
                    continue
                prev_marked = False
                visit(stmt, in_function or isinstance(
                    stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    return out


def test_function_local_imports_are_optional_or_explained():
    """Item 5: a function-local import hides a dependency from readers and from ruff, so it
    is only for an optional/heavy module (:data:`LAZY_OK`) or explained by ``# lazy:``."""
    bad = []
    for path in MODULES.values():
        for line, mod, is_marked in _function_local_imports(path.read_text(encoding="utf-8")):
            if not is_marked and mod.split(".")[0] not in LAZY_OK:
                bad.append(f"  {path.relative_to(ROOT.parent)}:{line}: import {mod}")
    assert not bad, ("function-local imports to move to the top of their module (or give a "
                     "'# lazy: <reason>' comment, e.g. a real cycle):\n" + "\n".join(bad))


def test_the_local_import_check_sees_violations():
    """The checker flags a plain local import, accepts optional modules, marked imports and
    their group, and ignores module-level and ``TYPE_CHECKING`` imports."""
    src = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from crossgap_jax.models import CLIP\n"
        "def f():\n"
        "    import json\n"
        "    import torch.nn\n"
        "    try:\n"
        "        from crossgap_jax.data import x  # lazy: a cycle\n"
        "        from crossgap_jax.data import y\n"
        "    except ImportError:\n"
        "        from .models import z\n"
        "    # lazy: settings read at import\n"
        "    from huggingface_hub import constants\n"
        "    class C:\n"
        "        def g(self):\n"
        "            import numpy\n"
    )
    got = _function_local_imports(src)
    assert got == [(6, "json", False), (7, "torch.nn", False), (9, "crossgap_jax.data", True),
                   (10, "crossgap_jax.data", True), (12, ".models", False),
                   (14, "huggingface_hub", True), (17, "numpy", False)]


def test_the_checker_sees_violations(monkeypatch):
    """The graph really contains function-local imports and the checks would fire: a
    synthetic upward import and a synthetic cycle are reported."""
    # A function-local import present in the source is in the graph (demo_caltech imports
    # the trainer inside a function); a TYPE_CHECKING import and an importlib string count.
    assert any(t == "crossgap_jax.train.trainer"
               for t, _ in RUNTIME_GRAPH["crossgap_jax.train.demo_caltech"])
    assert any(t == "crossgap_jax.pipeline.run" for t, _ in GRAPH["crossgap_jax.pipeline.measure"])
    assert not any(t == "crossgap_jax.pipeline.run"
                   for t, _ in RUNTIME_GRAPH["crossgap_jax.pipeline.measure"])
    monkeypatch.setitem(GRAPH, "crossgap_jax.data.types",
                        GRAPH["crossgap_jax.data.types"] + [("crossgap_jax.models.configs", 1)])
    assert ("crossgap_jax.data.types", "crossgap_jax.models.configs") in _layer_violations()
    monkeypatch.setitem(GRAPH, "crossgap_jax.data.decoding",
                        GRAPH["crossgap_jax.data.decoding"] + [("crossgap_jax.data.types", 1)])
    pair = {"crossgap_jax.data.decoding", "crossgap_jax.data.types"}
    assert any(pair <= set(c) for c in _cycles())


def test_cycles_count_type_checking_and_importlib_imports(tmp_path, monkeypatch):
    """A cycle whose one direction is an ``if TYPE_CHECKING:`` import or an
    ``importlib.import_module("crossgap_jax....")`` string is still reported."""
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n"
                 "    from crossgap_jax.pipeline.run import Run\n"
                 "import importlib\n"
                 "def f():\n"
                 "    return importlib.import_module('crossgap_jax.data.types')\n")
    monkeypatch.setitem(MODULES, "crossgap_jax.pipeline.zz_probe", a)
    found = {t for t, _ in _imports("crossgap_jax.pipeline.zz_probe")}
    assert found == {"crossgap_jax.pipeline.run", "crossgap_jax.data.types"}
    assert _imports("crossgap_jax.pipeline.zz_probe", runtime_only=True) == [
        ("crossgap_jax.data.types", 6)]
    monkeypatch.setitem(GRAPH, "crossgap_jax.pipeline.zz_probe",
                        [("crossgap_jax.pipeline.run", 3)])
    monkeypatch.setitem(GRAPH, "crossgap_jax.pipeline.run",
                        GRAPH["crossgap_jax.pipeline.run"]
                        + [("crossgap_jax.pipeline.zz_probe", 1)])
    pair = {"crossgap_jax.pipeline.run", "crossgap_jax.pipeline.zz_probe"}
    assert any(pair <= set(c) for c in _cycles())


def test_models_preprocess_with_the_data_code():
    """The model layer preprocesses with the data layer's code (one copy)."""
    from crossgap_jax.data import preprocess
    from crossgap_jax.models import bundle, configs

    assert bundle.preprocess_images is preprocess.preprocess_images
    assert configs.OPENAI_MEAN is preprocess.OPENAI_MEAN
