"""How SAMKernelRegressor reads: size, mode branches, and the walk of ``X`` through ``fit``.

Not a timing benchmark: the numbers of the architecture issue, measured the
same way before and after a change (run it on both checkouts).

Static, from the source (``ast``):

* lines and methods of ``SAMKernelRegressor``; lines and branches of its
  ``fit`` (``if``, conditional expressions, loops, ``except``, comprehension
  conditions);
* tests of the parametrization (a comparison with ``'exact'``, ``'nystroem'``
  or ``'linear'``), of the data source (calls of ``is_dask``) and of
  ``'precomputed'``, and the number of methods they occur in, in the class
  and in every ``sksam/_kernel*.py`` / ``kernel.py`` module.

Dynamic, by tracing fits (exact, Nystroem, primal linear, each with early
stopping and a ``tol``; not ``predict``): every distinct call edge between sksam functions,
classified as a *stay* (estimator module to itself), a *descent* (estimator
module to a lower module), a *climb back up* (a lower module calling into the
estimator's module: a callback, a seam) or a *lower* call (between lower
modules). The estimator's module is ``sksam/kernel.py``.

Usage::

    python benchmarks/bench_kernel_layout.py [--verbose]
    SKSAM_ROOT=/path/to/other/checkout python benchmarks/bench_kernel_layout.py
"""

import argparse
import ast
import os
import sys
from collections import Counter

ROOT = os.environ.get("SKSAM_ROOT", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

MODES = {"exact", "nystroem", "linear"}
BRANCHES = (ast.If, ast.IfExp, ast.For, ast.While, ast.ExceptHandler)


def _is_mode_test(node):
    if not isinstance(node, ast.Compare):
        return False
    parts = [node.left, *node.comparators]
    return any(isinstance(p, ast.Constant) and p.value in MODES for p in parts)


def _is_precomputed_test(node):
    if not isinstance(node, ast.Compare):
        return False
    parts = [node.left, *node.comparators]
    return any(isinstance(p, ast.Constant) and p.value == "precomputed" for p in parts)


def _is_dask_test(node):
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "is_dask"


TESTS = {"mode": _is_mode_test, "is_dask": _is_dask_test, "precomputed": _is_precomputed_test}


def _outer_functions(tree):
    """Module functions and class methods (closures count with their function)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from _outer_functions(node)


def _count_tests(tree):
    """{kind: (tests, functions containing one)}."""
    counts = {kind: [0, 0] for kind in TESTS}
    for func in _outer_functions(tree):
        for kind, test in TESTS.items():
            found = sum(1 for n in ast.walk(func) if test(n))
            counts[kind][0] += found
            counts[kind][1] += found > 0
    return counts


def _branches(func):
    count = sum(isinstance(n, BRANCHES) for n in ast.walk(func))
    count += sum(len(n.ifs) for n in ast.walk(func) if isinstance(n, ast.comprehension))
    return count


def static_report():
    path = os.path.join(ROOT, "sksam", "kernel.py")
    tree = ast.parse(open(path).read())
    cls = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SAMKernelRegressor"
    )
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    # fit, and _fit when fit only wraps it (a transaction)
    fit = [m for m in methods if m.name in ("fit", "_fit")]
    fit_lines = sum(m.end_lineno - m.lineno + 1 for m in fit)
    doc = ast.get_docstring(cls) or ""
    print("SAMKernelRegressor")
    print(f"  class lines          {cls.end_lineno - cls.lineno + 1}")
    print(f"  docstring lines      {len(doc.splitlines())}")
    print(f"  methods              {len(methods)}")
    print(f"  fit lines/branches   {fit_lines} / {sum(_branches(m) for m in fit)}")
    print("  tests in the class (tests / methods):")
    wrapper = ast.Module(body=[cls], type_ignores=[])
    for kind, (n, where) in _count_tests(wrapper).items():
        print(f"    {kind:12s} {n} / {where}")
    print("tests per module (tests / functions):")
    files = sorted(
        f for f in os.listdir(os.path.join(ROOT, "sksam")) if f.startswith(("kernel", "_kernel"))
    )
    for name in files:
        tree = ast.parse(open(os.path.join(ROOT, "sksam", name)).read())
        lines = len(open(os.path.join(ROOT, "sksam", name)).read().splitlines())
        counts = _count_tests(tree)
        cells = "  ".join(f"{k} {n}/{w}" for k, (n, w) in counts.items())
        print(f"  {name:24s} {lines:5d} lines  {cells}")


def _trace_fits():
    import numpy as np

    from sksam import SAMKernelRegressor

    sksam_dir = os.path.join(ROOT, "sksam") + os.sep
    estimator_module = os.path.join(sksam_dir, "kernel.py")
    edges = Counter()

    def where(frame):
        name = frame.f_code.co_filename
        if not name.startswith(sksam_dir):
            return None
        return name, frame.f_code.co_qualname

    def profile(frame, event, arg):
        if event == "call":
            here = where(frame)
            caller = None
            back = frame.f_back
            while back is not None and caller is None:
                caller = where(back)
                back = back.f_back
            if here is not None and caller is not None and here != caller:
                edges[(caller, here)] += 1
        return profile

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(300)
    settings = [
        {},
        {"n_components": 40, "random_state": 0},
        {"kernel": "linear"},
    ]
    sys.setprofile(profile)
    try:
        for params in settings:
            params = {"random_state": 0, **params}
            SAMKernelRegressor(max_iter=50, tol=1e-3, early_stopping=True, **params).fit(X, y)
    finally:
        sys.setprofile(None)
    kinds = Counter()
    listing = []
    for (caller, callee), _ in sorted(edges.items()):
        up = caller[0] == estimator_module
        down = callee[0] == estimator_module
        kind = {(True, True): "stay", (True, False): "descent", (False, True): "climb"}.get(
            (up, down), "lower"
        )
        kinds[kind] += 1
        listing.append((kind, caller, callee))
    return kinds, listing


def dynamic_report(verbose):
    kinds, listing = _trace_fits()
    print("walk of X through fit (distinct call edges between sksam functions):")
    for kind in ("stay", "descent", "climb", "lower"):
        print(f"  {kind:8s} {kinds[kind]}")
    for kind, caller, callee in listing:
        if verbose or kind == "climb":
            short = lambda site: f"{os.path.basename(site[0])}:{site[1]}"  # noqa: E731
            print(f"    {kind:8s} {short(caller)} -> {short(callee)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="list every call edge")
    args = parser.parse_args()
    static_report()
    dynamic_report(args.verbose)


if __name__ == "__main__":
    main()
