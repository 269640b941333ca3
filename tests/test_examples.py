"""Every gallery example runs, in its quick mode, as a user would run it.

``SKSAM_QUICK=1`` makes each ``examples/plot_*.py`` shrink its grid, seeds
and training lengths to a smoke test; the full versions run when the
documentation is built (see README.md). Each example runs in its own process
with a time bound, from the repository root so that this checkout's
``sksam`` is imported.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))
TIME_LIMIT_S = 120  # per example; all of them together take well under that


def test_there_are_examples():
    assert len(EXAMPLES) >= 10 and len(RECIPES) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs_in_quick_mode(example, tmp_path):
    env = {
        **os.environ,
        "SKSAM_QUICK": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,  # examples write nothing; if one did, it lands here
        env=env,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_states_its_point_and_reads_quick_mode(example):
    source = example.read_text()
    assert source.startswith('"""\n==='), "a ===-titled docstring first"
    assert "The point of th" in source, "the first paragraph states the figure's point"
    assert 'os.environ.get("SKSAM_QUICK") == "1"' in source


RECIPES = sorted((ROOT / "examples").glob("run_*.py"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipes_shown_but_not_run_compile_and_state_their_point(recipe):
    """``run_*.py`` pages are shown in the gallery, not executed (several
    processes); they must at least be valid Python with a stated point."""
    source = recipe.read_text()
    compile(source, str(recipe), "exec")
    assert source.startswith('"""\n===') and "The point of th" in source
