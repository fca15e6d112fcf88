"""The README's two commands are the ones CI and users run."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    block = re.search(r"## The two commands.*?```bash\n(.*?)```", (REPO / "README.md").read_text(),
                      re.S).group(1)
    return [l for l in block.splitlines() if l.strip() and not l.startswith("#")]


def test_ci_runs_the_readme_test_command():
    lab_cmd, test_cmd = _readme_commands()
    assert "pytest" in test_cmd and "labkit up --jupyter" in lab_cmd
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci


def test_readme_lists_every_notebook():
    readme = (REPO / "README.md").read_text()
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.name}" in readme, f"add {nb.name} to the README's notebook list"
