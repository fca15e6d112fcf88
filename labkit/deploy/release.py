"""Releases: a snapshot of the application's code, from a git revision or the working tree.

A release is a directory ``<root>/<name>/`` holding ``labkit/`` as it was at one revision
(``git archive``) or as it is in the working tree, optionally with one of the patches in
``labkit/deploy/patches/`` applied, and a ``RELEASE.json`` saying where it came from. The whole
package is taken, not ``labkit/web`` alone, because the web tier imports the backend it ships
with: a deploy replaces all of the application's code, as a real one does.

How a release runs beside the installed ``labkit`` without clashing: a pool's gunicorn starts
with ``PYTHONPATH=<release dir>``. In that process (and only there) ``import labkit`` finds the
snapshot first, because ``PYTHONPATH`` entries come before site-packages on ``sys.path`` and an
editable install's finder is appended to ``sys.meta_path`` after the path finder. Two pools
are two processes with two ``sys.path``s, so the same module names (``labkit.web.views``) hold
different code in each; nothing is renamed and the release's own imports stay as written.
The pool's measuring harness lives under a name no release uses (``labkit_pool_harness``).

Introduced in notebooks/13_continuous_deployment.ipynb.

>>> base = Release.from_git(REPO, "HEAD", root)                          # doctest: +SKIP
>>> bad = Release.from_worktree(REPO, root, patch="n_plus_one")          # doctest: +SKIP
>>> bad.name, bad.labkit_dir                                             # doctest: +SKIP
('worktree-3f2a9c1e+n_plus_one', PosixPath('.../worktree-3f2a9c1e+n_plus_one/labkit'))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

PATCH_DIR = Path(__file__).resolve().parent / "patches"
REPO = Path(__file__).resolve().parents[2]
_MARK = "RELEASE.json"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.c", "build", "*.egg-info")


class ReleaseError(RuntimeError):
    """A release could not be made (unknown revision or patch, a patch that does not apply)."""


def patches() -> dict[str, str]:
    """The patches a release can carry: name -> what it changes (the patch's first line)."""
    out = {}
    for p in sorted(PATCH_DIR.glob("*.patch")):
        first = p.read_text().splitlines()[0] if p.stat().st_size else ""
        out[p.stem] = first.removeprefix("#").strip()
    return out


def patch_path(name: str) -> Path:
    """The file of patch ``name`` (a key of ``patches()``), or an error listing the choices."""
    path = PATCH_DIR / f"{name}.patch"
    if not path.is_file():
        raise ReleaseError(f"no patch {name!r}; choose one of {', '.join(patches())} "
                           f"(files in {PATCH_DIR})")
    return path


@dataclass(frozen=True)
class Release:
    """One version of the application's code, in a directory of its own.

    ``path`` goes on a pool's ``PYTHONPATH``; ``name`` is what the pool reports in its
    ``X-Release`` header and what the decision log records.
    """

    name: str
    path: Path
    source: str          # "git <rev> <sha>" or "working tree <repo>"
    patch: str | None
    digest: str          # sha256 of the code (file names and contents), first 12 hex digits

    @property
    def labkit_dir(self) -> Path:
        return self.path / "labkit"

    # ---------------------------------------------------------------------- constructors
    @classmethod
    def from_git(cls, repo: Path, rev: str, root: Path, *, patch: str | None = None,
                 name: str | None = None) -> "Release":
        """``labkit/`` at git revision ``rev`` of ``repo`` (``git archive``), plus ``patch``."""
        repo = Path(repo)
        sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
        tar_bytes = _git_bytes(repo, "archive", "--format=tar", sha, "labkit")
        label = name or f"{_label(rev)}-{sha[:8]}"

        def fill(dest: Path) -> None:
            with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
                if hasattr(tarfile, "data_filter"):  # refuse links and paths out of dest
                    tar.extractall(dest, filter="data")
                else:  # pragma: no cover - Python without PEP 706
                    tar.extractall(dest)

        return cls._make(root, label, f"git {rev} {sha}", patch, fill)

    @classmethod
    def from_worktree(cls, repo: Path, root: Path, *, patch: str | None = None,
                      name: str | None = None) -> "Release":
        """``labkit/`` as it is now in ``repo``'s working tree (edits included), plus ``patch``."""
        src = Path(repo) / "labkit"
        if not (src / "web" / "wsgi.py").is_file():
            raise ReleaseError(f"{src} is not the labkit package of a checkout (no web/wsgi.py); "
                               f"pass the repository root, e.g. {REPO}")

        def fill(dest: Path) -> None:
            shutil.copytree(src, dest / "labkit", ignore=_SKIP)

        label = name or f"worktree-{_tree_digest(src)[:8]}"
        return cls._make(root, label, f"working tree {Path(repo).resolve()}", patch, fill)

    @classmethod
    def _make(cls, root: Path, label: str, source: str, patch: str | None, fill) -> "Release":
        name = f"{label}+{patch}" if patch else label
        if not name.replace("-", "").replace("+", "").replace("_", "").replace(".", "").isalnum():
            raise ReleaseError(f"release name {name!r}: use letters, digits, '-', '_' and '.'")
        path = Path(root) / name
        tmp = Path(root) / f".{name}.tmp"
        for old in (tmp, path):
            _remove_release_dir(old)
        tmp.mkdir(parents=True)
        fill(tmp)
        if patch:
            _apply(patch_path(patch), tmp)
        digest = _tree_digest(tmp / "labkit")[:12]
        release = cls(name, path, source, patch, digest)
        (tmp / _MARK).write_text(json.dumps({**asdict(release), "path": str(path)}, indent=1))
        os.replace(tmp, path)
        return release

    @classmethod
    def load(cls, path: Path) -> "Release":
        """The release in ``path`` (made earlier by ``from_git`` / ``from_worktree``)."""
        data = json.loads((Path(path) / _MARK).read_text())
        return cls(data["name"], Path(path), data["source"], data["patch"], data["digest"])


# ---------------------------------------------------------------------------------- helpers

def _label(rev: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in rev)
    return keep.strip("-.") or "rev"


def _remove_release_dir(path: Path) -> None:
    """Delete an earlier snapshot of the same name; only one this module made (it has the mark)."""
    if not path.exists():
        return
    if path.name.startswith(".") and path.name.endswith(".tmp") or (path / _MARK).is_file():
        shutil.rmtree(path)
        return
    raise ReleaseError(f"{path} exists and is not a release snapshot (no {_MARK}); "
                       "move it away or choose another release root")


def _apply(patch: Path, dest: Path) -> None:
    """Apply ``patch`` to the snapshot in ``dest`` with ``git apply``, and prove it applied.

    ``git apply`` works outside a repository; GIT_CEILING_DIRECTORIES keeps it from finding a
    repository above ``dest`` (in one, it would silently skip paths outside the current
    directory). ``--check -R`` afterwards proves every hunk is in.
    """
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(dest.resolve().parent)}
    for args in (["apply", "--whitespace=nowarn", str(patch)],
                 ["apply", "--check", "-R", str(patch)]):
        out = subprocess.run(["git", *args], cwd=dest, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise ReleaseError(
                f"patch {patch.stem} does not apply to this code ({' '.join(args[:2])}): "
                f"{(out.stderr or out.stdout).strip()[:800]}\nThe code it changes has moved on: "
                f"update {patch} (make the change by hand, then `git diff > {patch.name}`).")


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in {".py", ".pyx", ".sql"}:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _git_bytes(repo: Path, *args: str) -> bytes:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True)
    except FileNotFoundError:
        raise ReleaseError("git not found; install it with `apt-get install git`") from None
    if out.returncode != 0:
        raise ReleaseError(f"git {' '.join(args[:2])} in {repo} failed: "
                           f"{out.stderr.decode(errors='replace').strip()[:500]} "
                           "(is it a git checkout, and does the revision exist?)")
    return out.stdout


def _git(repo: Path, *args: str) -> str:
    return _git_bytes(repo, *args).decode()
