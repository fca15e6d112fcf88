"""Notebooks are committed without outputs (and every notebook is valid JSON)."""

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _committed_notebooks() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: check what is here
        return sorted(REPO.glob("*/*.ipynb"))
    return [REPO / p for p in out]


def dirty_cells(path: Path) -> int:
    nb = json.loads(path.read_text())
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code"
               and (c.get("outputs") or c.get("execution_count") is not None))


def test_committed_notebooks_have_no_outputs():
    notebooks = _committed_notebooks()
    assert any(p.parent.name == "notebooks" for p in notebooks)
    dirty = {str(p.relative_to(REPO)): n for p in notebooks if (n := dirty_cells(p))}
    assert dirty == {}, f"strip outputs first (e.g. `jupyter nbconvert --clear-output --inplace`): {dirty}"


def test_the_check_catches_outputs(tmp_path):
    nb = {"cells": [{"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "1",
                     "outputs": [{"output_type": "execute_result", "data": {"text/plain": "1"},
                                  "metadata": {}, "execution_count": 1}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert dirty_cells(path) == 1
