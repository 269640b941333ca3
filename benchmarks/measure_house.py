"""Measure how much of sksam a reader must hold to follow one ``fit``.

Prints, for one small ``fit`` of each estimator family, the sksam files,
classes and functions it runs through and its deepest sksam call chain; then
the lines of ``sksam/``, the private (underscored) names one sksam module
imports from another (or reads off an imported sksam module), and the import
cycles between sksam modules, lazy imports inside functions included.

    python benchmarks/measure_house.py            # everything
    python benchmarks/measure_house.py --static   # no fits (lines, names, cycles)

Run it from the repository root with ``PYTHONPATH=$PWD`` so that the
checkout's sksam is the one measured.
"""

import argparse
import ast
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sksam"


# --------------------------------------------------------------------------
# dynamic: what one fit runs through
# --------------------------------------------------------------------------


def _families():
    """One small fit per family: (label, estimator, X, y)."""
    from sksam import SAMKernelRegressor, SAMNetClassifier, SAMTwoLayerClassifier

    rng = np.random.RandomState(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    y_class = (X[:, 0] > 0).astype(int)
    y_reg = np.sin(X[:, 0]).astype(np.float64)
    return [
        ("SAMNetClassifier", SAMNetClassifier(max_epochs=3, random_state=0), X, y_class),
        (
            "SAMTwoLayerClassifier",
            SAMTwoLayerClassifier(n_hidden=8, max_iter=5, random_state=0),
            X,
            y_class,
        ),
        ("SAMKernelRegressor", SAMKernelRegressor(max_iter=20), X, y_reg),
    ]


def trace_fit(estimator, X, y):
    """Files, classes, functions and the deepest sksam call chain of ``estimator.fit``."""
    prefix = str(PACKAGE) + "/"
    files, classes, functions = set(), set(), set()
    depth = {"now": 0, "max": 0}

    def profile(frame, event, arg):
        code = frame.f_code
        if not code.co_filename.startswith(prefix):
            return
        if event == "call":
            name = code.co_qualname
            if "<genexpr>" in name or "<listcomp>" in name or "<dictcomp>" in name:
                return
            rel = code.co_filename[len(prefix) :]
            files.add(rel)
            functions.add((rel, name, code.co_firstlineno))
            owner = name.split(".<locals>")[0].rsplit(".", 1)
            if len(owner) == 2:
                classes.add((rel, owner[0]))
            depth["now"] += 1
            depth["max"] = max(depth["max"], depth["now"])
        elif event == "return":
            name = code.co_qualname
            if "<genexpr>" in name or "<listcomp>" in name or "<dictcomp>" in name:
                return
            depth["now"] -= 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.setprofile(profile)
        try:
            estimator.fit(X, y)
        finally:
            sys.setprofile(None)
    return files, classes, functions, depth["max"]


# --------------------------------------------------------------------------
# static: lines, private names across modules, import cycles
# --------------------------------------------------------------------------


def _modules():
    """``{dotted name: path}`` of every sksam module."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(module, node):
    """The absolute module a ``from ... import`` in ``module`` names."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".")
    is_package = _modules()[module].name == "__init__.py"
    base = package if is_package else package[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges():
    """``[(importer, imported module, [names], lazy)]`` over sksam modules."""
    modules = _modules()
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        lazy_nodes = set()
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lazy_nodes.update(id(n) for n in ast.walk(func))
        for node in ast.walk(tree):
            lazy = id(node) in lazy_nodes
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, node)
                if not target.startswith("sksam"):
                    continue
                plain = []
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:  # `from . import _module`: a module edge
                        edges.append((module, sub, [], lazy))
                    else:
                        plain.append(alias.name)
                if plain and target in modules:
                    edges.append((module, target, plain, lazy))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("sksam") and alias.name in modules:
                        edges.append((module, alias.name, [], lazy))
    return edges


def _module_aliases(module, tree, modules):
    """Local names bound to sksam modules in ``module``: ``{alias: module}``."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    aliases[alias.asname or alias.name] = sub
    return aliases


def private_crossings():
    """``{(importer, source, name)}``: underscored names used across sksam modules.

    Counts ``from .x import _name`` and ``_module._name`` reads off an imported
    sksam module; dunders and private *modules* (a name that is a module) are
    not private names.
    """
    modules = _modules()
    crossings = set()
    for importer, target, names, _lazy in import_edges():
        for name in names:
            if name.startswith("_") and not name.startswith("__"):
                crossings.add((importer, target, name))
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases = _module_aliases(module, tree, modules)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                crossings.add((module, aliases[node.value.id], node.attr))
    return crossings


def import_cycles():
    """Strongly connected groups (size > 1) of the sksam import graph, lazy edges included.

    A package's ``__init__`` importing its own submodules is not a cycle of
    the code (Python runs the submodule after the package), so edges from a
    package to its own submodules are left out.
    """
    graph = {}
    for importer, target, _names, _lazy in import_edges():
        if importer == target or target.startswith(importer + "."):
            continue
        graph.setdefault(importer, set()).add(target)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if node not in index:
            visit(node)
    return groups


def count_lines():
    return sum(len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--static", action="store_true", help="skip the traced fits")
    parser.add_argument("--verbose", action="store_true", help="list the names")
    args = parser.parse_args()
    if not args.static:
        import torch

        torch.set_num_threads(1)
        for label, estimator, X, y in _families():
            files, classes, functions, depth = trace_fit(estimator, X, y)
            print(
                f"{label}.fit: {len(files)} files, {len(classes)} classes, "
                f"{len(functions)} functions, sksam call depth {depth}"
            )
            if args.verbose:
                print("   files:", ", ".join(sorted(files)))
    print(f"lines of sksam/: {count_lines()}")
    crossings = private_crossings()
    names = sorted({name for _i, _t, name in crossings})
    print(
        f"private names crossing sksam modules: {len(names)} distinct "
        f"({len(crossings)} importer/name pairs)"
    )
    if args.verbose:
        for importer, target, name in sorted(crossings):
            print(f"   {importer} <- {target}.{name}")
    cycles = import_cycles()
    print(f"import cycles (lazy imports included): {len(cycles)}")
    for group in cycles:
        print("   " + " <-> ".join(group))


if __name__ == "__main__":
    main()
