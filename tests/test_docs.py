"""The README's promises: its quick start runs and its set-up commands agree with CI."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _fenced_block_after(marker, language):
    match = re.search(re.escape(marker) + r".*?```" + language + r"\n(.*?)```", README, re.S)
    assert match, f"no ```{language} block after {marker!r} in README.md"
    return match.group(1)


def test_quick_start_runs(capsys):
    code = _fenced_block_after("## Quick start", "python")
    exec(compile(code, "README.md quick start", "exec"), {})
    printed = capsys.readouterr().out
    assert "sharpness:" in printed


@pytest.mark.parametrize("marker", ["<!-- main-command -->", "<!-- test-command -->"])
def test_two_set_up_commands_install_the_cpu_torch_first(marker):
    command = _fenced_block_after(marker, "bash").strip()
    assert command.startswith("pip install torch==2.13.0 && pip install -e ")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci
