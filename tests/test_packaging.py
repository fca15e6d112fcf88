"""Packaging: the wheel carries the templates, every import is declared, the lock is complete.

The slow test builds the wheel, installs it (not editable) into a fresh virtualenv with the
locked versions and runs `labkit up` / `status` / `down` from a directory outside the checkout.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "containers" / "requirements.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _declared() -> list[Requirement]:
    """pyproject's dependencies and every extra's, less the extras naming labkit itself."""
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "labkit"]


def _locked(lock_text: str) -> dict[str, list[str]]:
    """name -> the versions the lock pins for it (one per Python/platform fork)."""
    pins: dict[str, list[str]] = {}
    for line in lock_text.splitlines():
        m = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if m:
            pins.setdefault(canonicalize_name(m.group(1)), []).append(m.group(2))
    return pins


def _not_in_lock(requirements: list[Requirement], lock_text: str) -> list[str]:
    """Requirements the lock lacks, or pins at a version their specifier excludes."""
    pins = _locked(lock_text)
    wrong = []
    for req in requirements:
        versions = pins.get(canonicalize_name(req.name), [])
        if not versions or not all(req.specifier.contains(v, prereleases=True) for v in versions):
            wrong.append(f"{req} (locked: {', '.join(versions) or 'nothing'})")
    return wrong


def test_every_dependency_is_in_the_lock() -> None:
    missing = _not_in_lock(_declared(), LOCK.read_text())
    assert not missing, ("pyproject.toml asks for what containers/requirements.lock does not pin: "
                         f"{'; '.join(missing)}. Regenerate the lock: `bash containers/lock.sh`")


def test_the_lock_check_catches_a_dependency_added_without_relocking() -> None:
    lock = LOCK.read_text()
    added = [Requirement("left-pad>=1"), Requirement("psutil>=999"), Requirement("amqp>=5.1")]
    assert [m.split(" ")[0] for m in _not_in_lock(added, lock)] == ["left-pad>=1", "psutil>=999"]


# ------------------------------------------------------------------------------- imports

def _sources() -> list[tuple[str, str]]:
    """(where, Python source) of labkit/, tests/, benchmarks/ and every notebook's code."""
    out = []
    for top in ("labkit", "tests", "benchmarks", "containers"):
        out += [(str(p.relative_to(REPO)), p.read_text()) for p in (REPO / top).rglob("*.py")]
    for top in ("notebooks", "solutions", "exercises"):
        for nb in (REPO / top).glob("*.ipynb"):
            for cell in json.loads(nb.read_text())["cells"]:
                if cell["cell_type"] == "code":
                    code = "".join(cell["source"])
                    if code.lstrip().startswith("%%") and not code.lstrip().startswith("%%time"):
                        continue  # a cell magic (%%cython, %%bash): its body is not Python
                    # IPython magics and shell escapes are not Python.
                    code = "\n".join(l for l in code.splitlines()
                                     if not l.lstrip().startswith(("%", "!")))
                    out.append((str(nb.relative_to(REPO)), code))
    return out


def _parse(code: str) -> ast.AST:
    """``ast.parse``, in a fresh interpreter when this one's parser state is damaged.

    CPython 3.11 can raise "SystemError: AST constructor recursion depth mismatch" for any
    source once some earlier code in the process hit a RecursionError (seen in a full pytest
    run); a subprocess parses the same text cleanly.
    """
    try:
        return ast.parse(code)
    except SystemError:
        out = subprocess.run([sys.executable, "-c", "import ast, sys; "
                              "print(ast.dump(ast.parse(sys.stdin.read())))"],
                             input=code, capture_output=True, text=True, check=True)
        return eval(out.stdout, vars(ast))  # ast.dump's output rebuilds the tree


def _imported_top_levels(sources: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Top-level module -> where it is imported (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for where, code in sources:
        for node in ast.walk(_parse(code)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(where)
    return found


def _undeclared(imported: dict[str, set[str]], declared: set[str]) -> list[str]:
    """Third-party imports whose distribution pyproject.toml does not name."""
    dists = importlib.metadata.packages_distributions()
    local = {"labkit", "conftest"}
    problems = []
    for module, where in sorted(imported.items()):
        if module in sys.stdlib_module_names or module in local:
            continue
        # Not installed here (tomli on Python 3.11+): the module's own name must be declared.
        names = {canonicalize_name(d) for d in dists.get(module, [])} or {canonicalize_name(module)}
        if not names & declared:
            problems.append(f"{module} (imported in {', '.join(sorted(where)[:3])}; "
                            f"distribution: {', '.join(sorted(names)) or 'not installed'})")
    return problems


def test_every_imported_package_is_declared() -> None:
    declared = {canonicalize_name(r.name) for r in _declared()}
    undeclared = _undeclared(_imported_top_levels(_sources()), declared)
    assert not undeclared, ("imported but not declared in pyproject.toml (add each, with a comment, "
                            f"then `bash containers/lock.sh`): {'; '.join(undeclared)}")


def test_the_import_check_catches_an_undeclared_import() -> None:
    imported = {"amqp": {"labkit/services/rabbitmq.py"}, "os": {"x"}, "labkit": {"y"}}
    assert [p.split(" ")[0] for p in _undeclared(imported, {"psutil"})] == ["amqp"]
    assert _undeclared(imported, {"amqp"}) == []


# ------------------------------------------------------------------------------ the wheel

def test_every_labkit_package_goes_into_the_wheel() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "labkit").rglob("*.py")}
    assert on_disk | {"labkit.containers"} == listed, (
        "pyproject.toml's [tool.setuptools] packages must list every package under labkit/")
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"labkit.containers": "containers"}


def test_templates_are_found_through_the_package() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "labkit").rglob("*.py")
                 if re.search(r"""["']containers["']""", p.read_text())]
    assert offenders == [], "read templates with labkit.services.templates.template_dir()"
    from labkit.services.templates import template_dir
    assert (template_dir("cassandra") / "pom.xml").is_file()


def _checkout_files() -> list[Path]:
    """The files a fresh clone would have (tracked, plus new files not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [Path(p) for p in out.splitlines() if (REPO / p).is_file()]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.mark.slow
def test_the_wheel_runs_a_lab_outside_the_checkout(tmp_path: Path, fresh_lab_dir: Path) -> None:
    # Build from a copy of what a clone holds, so nothing else in this checkout can help.
    src = tmp_path / "src"
    files = _checkout_files()
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
          str(src)])
    wheel = next((tmp_path / "dist").glob("labkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = [f for f in files if f.parts[0] == "containers" and len(f.parts) == 3]
    assert templates and {"labkit/" + f.as_posix() for f in templates} <= names
    assert not {n for n in names if n.endswith(("bootstrap.sh", "lock.sh", ".lock"))}

    # Not editable, and only labkit's own dependencies (no extras), at the locked versions: the
    # lock as constraints, without its hashes (they would ask for every dependency in a
    # requirements file, extras included).
    venv = tmp_path / "venv"
    pins = re.sub(r"\s*\\\n\s*--hash=\S+", "", LOCK.read_text())
    (tmp_path / "constraints.txt").write_text(pins)
    install = ["install", "-q", "-c", str(tmp_path / "constraints.txt"), str(wheel)]
    uv = Path(sys.executable).parent / "uv"  # bootstrap.sh installs the lock with it
    if uv.exists():  # the same install from uv's cache: about a minute less in CI
        _run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)])
        _run([str(uv), "pip", *install, "--python", str(venv / "bin" / "python")])
    else:
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "python"), "-m", "pip", *install,
              "--disable-pip-version-check"])

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABKIT_", "PYTHON", "VIRTUAL_ENV"))}
    env["LABKIT_LAB_DIR"] = str(fresh_lab_dir)
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import labkit; from labkit.services.templates import template_dir; "
                  "print(labkit.__file__); print(template_dir('postgres'))"],
                 cwd=outside, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    labkit = str(venv / "bin" / "labkit")
    _run([labkit, "up", "--services", "postgres,memcached"], cwd=outside, env=env)
    status = _run([labkit, "status"], cwd=outside, env=env).stdout
    rows = [l.split() for l in status.splitlines()[2:]]
    assert {r[0].split("-")[0] for r in rows} == {"postgres", "memcached"}, status
    assert all(r[1] == "ok" for r in rows), status
    _run([labkit, "down"], cwd=outside, env=env)
    assert not (fresh_lab_dir / "state.json").exists()
