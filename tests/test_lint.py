"""The code is formatted and linted by ruff (configuration in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What ruff looks at: the package, its tests, examples, benchmarks and docs
#: configuration (named explicitly, so that a virtual environment inside the
#: checkout, such as CI's ``.venv-ci``, is never linted).
PATHS = [p for p in ["sksam", "tests", "examples", "benchmarks", "docs"] if (ROOT / p).exists()]


def _ruff():
    """The ruff command: the executable, or ``python -m ruff``; None if absent."""
    executable = shutil.which("ruff")
    if executable:
        return [executable]
    try:
        import ruff  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "ruff"]


RUFF = _ruff()
pytestmark = pytest.mark.skipif(
    RUFF is None, reason="ruff is not installed (it is in the 'test' extra)"
)


def _run(*args):
    result = subprocess.run(
        [*RUFF, *args, *PATHS], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return result.returncode, result.stdout + result.stderr


def test_ruff_format():
    code, output = _run("format", "--check")
    assert code == 0, f"run `ruff format {' '.join(PATHS)}`:\n{output}"


def test_ruff_check():
    code, output = _run("check")
    assert code == 0, f"run `ruff check --fix {' '.join(PATHS)}`:\n{output}"
