"""What a lab owns: its directory's marker, the guard on destructive commands, the purge.

The lab owns only what it made. The first ``up`` into a new or empty directory writes the
marker file ``.labkit-lab`` there: a random lab id on its first line, then one line per
top-level file or directory the lab creates (the lab's own files, each server's and helper's
work directory). ``spawn`` puts the id into every server's and helper's environment
(``LABKIT_LAB_ID``), so ``down`` stops exactly the processes that carry it, and
``down --purge`` deletes exactly the names the marker lists, never "every child".

Refused, with the directory named and what to do: a directory without the marker that holds
anything, ``/``, a home directory (or one holding a home), and a directory holding the current
working directory or labkit itself. An existing directory's mode is never changed.

>>> made = claim(Path("/tmp/my-lab"), user=None)          # doctest: +SKIP
>>> lab_id = mark(Path("/tmp/my-lab"), made)               # doctest: +SKIP
>>> read_marker(Path("/tmp/my-lab")).owns                  # doctest: +SKIP
('lock', 'state.json', 'state.json.tmp', 'secrets.json', 'secrets.json.tmp')
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from labkit._proc import ServiceError, check_reachable

MARKER = ".labkit-lab"
# What the Lab itself writes at the top of its directory (the servers' directories are
# recorded when they are made, see `record`).
LAB_FILES = ("lock", "state.json", "state.json.tmp", "secrets.json", "secrets.json.tmp")
# What labkit made at the top of a lab directory before markers existed (see `adopt`).
_LEGACY_NAMES = re.compile(r"lock|(state|secrets)\.(json|tmp)|postgres|memcached-\d+|rabbitmq"
                           r"|cassandra")
_FIX_DIR = ("set LABKIT_LAB_DIR (or --lab-dir, or lab_dir in lab.toml) to the lab's own "
            "directory, e.g. /var/lib/labkit/<name>: a new or empty directory becomes a lab's "
            "at its first `labkit up`")


@dataclass(frozen=True)
class Marker:
    """The contents of a lab directory's marker file."""

    lab_id: str
    owns: tuple[str, ...]
    made_dir: bool = False


# ----------------------------------------------------------------------------- the marker

def make_temp(prefix: str, parent: str = "/tmp") -> Path:
    """A new, empty directory for a disposable lab (tests, benchmarks), enterable by all.

    Mode 0755: as root the servers run as an unprivileged account that must be able to enter
    the lab directory (``tempfile``'s own directories, and pytest's ``tmp_path``, are 0700).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


def read_marker(lab_dir: Path) -> Marker | None:
    """The marker of ``lab_dir``, or None when it has none (it is not a lab directory)."""
    path = Path(lab_dir) / MARKER
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise ServiceError(f"cannot read the lab marker {path}: {e.strerror}") from None
    try:
        head = json.loads(lines[0])
        lab_id = str(head["lab_id"])
        if not re.fullmatch(r"[0-9a-f]{16,64}", lab_id):
            raise ValueError(lab_id)
    except (IndexError, ValueError, KeyError, TypeError):
        raise ServiceError(
            f"the lab marker {path} is damaged (its first line must be the JSON header labkit "
            f"wrote). Stop the lab's servers by hand if any still run, then move {lab_dir} "
            "aside and start afresh with `labkit up`") from None
    owns: list[str] = []
    for line in lines[1:]:
        try:  # a line cut short by a crash mid-append is skipped, never guessed at
            name = json.loads(line)["owns"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(name, str) and _plain_name(name) and name not in owns:
            owns.append(name)
    return Marker(lab_id, tuple(owns), bool(head.get("made_dir")))


def find_lab(path: Path) -> tuple[Path, Marker] | None:
    """The nearest directory at or above ``path`` that carries a marker, with its marker."""
    p = Path(path).resolve()
    for d in (p, *p.parents):
        if d.exists() and not os.access(d, os.X_OK):
            continue  # a directory we may not enter holds no marker we could read
        marker = read_marker(d)
        if marker is not None:
            return d, marker
    return None


def record(path: Path) -> None:
    """Note in the marker of the lab that holds ``path`` that the lab made its top-level entry.

    Called before a server's or helper's work directory is made (NativeService.start), so
    ``down --purge`` deletes it later; a no-op outside any lab directory.
    """
    found = find_lab(Path(path).resolve().parent)
    if found is None:
        return
    lab_dir, marker = found
    parts = Path(path).resolve().relative_to(lab_dir).parts
    if parts and parts[0] not in marker.owns and parts[0] != MARKER:
        _append(lab_dir, parts[0])


def _append(lab_dir: Path, name: str) -> None:
    # One write() with O_APPEND: lines from concurrent processes never interleave.
    fd = os.open(lab_dir / MARKER, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (json.dumps({"owns": name}) + "\n").encode())
    finally:
        os.close(fd)


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and name != MARKER


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new, never half.

    The data is fsync-ed before the rename and the directory after it (POSIX gives no other
    way to have both the contents and the name on disk).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -------------------------------------------------------------------------- taking a dir

def claim(lab_dir: Path, user: str | None) -> bool:
    """Check that ``up`` may use ``lab_dir``, creating it if missing; True if it was made.

    A new directory (and any missing parent) is made with mode 0755 when ``user`` is set (we
    are root and the servers run as ``user``). An existing one is used only if it carries the
    marker, is empty, or is a lab made by an older labkit (see ``adopt``); its mode is never
    changed, and when ``user`` cannot enter it, the error gives the fix.
    """
    lab_dir = Path(lab_dir)
    refuse_unsafe(lab_dir, "start a lab in", check_cwd=False)
    if lab_dir.exists() and not lab_dir.is_dir():
        raise ServiceError(f"the lab directory {lab_dir} is a file; {_FIX_DIR}")
    if lab_dir.exists():
        if read_marker(lab_dir) is None and not _is_legacy(lab_dir):
            foreign = _foreign(lab_dir)
            if foreign:
                raise ServiceError(
                    f"refusing to start a lab in {lab_dir}: it holds files labkit did not make "
                    f"({_names(foreign)}) and no lab marker ({MARKER}). A lab needs a directory "
                    f"of its own: {_FIX_DIR}")
        check_reachable(lab_dir, user)
        return False
    check_reachable(lab_dir, user)
    missing = [d for d in (lab_dir, *lab_dir.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        if user is not None:
            d.chmod(0o755)  # made just now, by us: the server account must be able to enter it
    return True


def mark(lab_dir: Path, made_dir: bool = False) -> str:
    """Write the marker unless ``lab_dir`` has one (call under the lab's lock); the lab id."""
    marker = read_marker(lab_dir)
    if marker is not None:
        return marker.lab_id
    owns = list(LAB_FILES)
    if _is_legacy(lab_dir):  # adopt what an older labkit made, and only that
        owns += [c.name for c in sorted(lab_dir.iterdir())
                 if _LEGACY_NAMES.fullmatch(c.name) and c.name not in owns]
    lab_id = secrets.token_hex(16)
    head = {"labkit_lab": 1, "lab_id": lab_id, "created_at": time.time(), "made_dir": made_dir}
    write_atomic(lab_dir / MARKER, "\n".join(
        [json.dumps(head), *(json.dumps({"owns": n}) for n in owns)]) + "\n", mode=0o644)
    return lab_id


def _is_legacy(lab_dir: Path) -> bool:
    """True for a lab directory made by labkit before markers existed (its secrets or state)."""
    for name, key in (("secrets.json", "pg_password"), ("state.json", "services")):
        try:
            data = json.loads((lab_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and key in data:
            return True
    return False


def _foreign(lab_dir: Path) -> list[str]:
    # A bare `lock` is what an older `labkit down` left in a directory it was pointed at.
    return sorted(c.name for c in lab_dir.iterdir() if c.name != "lock")


def _names(names: list[str], most: int = 5) -> str:
    more = f", and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


# ---------------------------------------------------------------------- destructive side

def for_down(lab_dir: Path, purge: bool) -> str | None:
    """The lab id that ``down`` may stop (and purge) in ``lab_dir``; None if nothing is there.

    Raises, naming the directory and the fix, when ``lab_dir`` is not the lab's to touch: it
    is ``/``, a home, holds the working directory or labkit, or holds files without a marker.
    """
    lab_dir = Path(lab_dir)
    action = "delete the data of" if purge else "stop the processes of"
    if not lab_dir.exists():
        return None
    refuse_unsafe(lab_dir, action)
    if not lab_dir.is_dir():
        raise ServiceError(f"refusing to {action} {lab_dir}: it is a file, not a lab directory; "
                           f"{_FIX_DIR}")
    marker = read_marker(lab_dir)
    if marker is not None:
        return marker.lab_id
    if _is_legacy(lab_dir):
        return mark(lab_dir)
    foreign = _foreign(lab_dir)
    if not foreign:
        return None
    raise ServiceError(
        f"refusing to {action} {lab_dir}: it is not a lab directory (it has no {MARKER} marker, "
        f"which `labkit up` writes) and it holds files labkit did not make ({_names(foreign)}). "
        f"Nothing was stopped or deleted. If your lab lives elsewhere, {_FIX_DIR}")


def purge(lab_dir: Path) -> tuple[list[str], list[str]]:
    """Delete what the lab made in ``lab_dir`` (the names its marker lists): (deleted, kept).

    The marker and the lock stay, so the directory remains this lab's; everything else that
    is there is left alone and returned as ``kept``.
    """
    lab_dir = Path(lab_dir)
    marker = read_marker(lab_dir)
    if marker is None:
        raise ServiceError(f"refusing to delete anything in {lab_dir}: it has no {MARKER} marker")
    owned = set(marker.owns) - {"lock", MARKER}
    deleted, kept = [], []
    for child in sorted(lab_dir.iterdir()):
        if child.name in ("lock", MARKER):
            continue
        if child.name not in owned:
            kept.append(child.name)
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
            deleted.append(child.name)
        else:
            child.unlink()  # a file, or a symlink (never followed)
            deleted.append(child.name)
    return deleted, kept


def refuse_unsafe(lab_dir: Path, action: str, *, check_cwd: bool = True) -> None:
    """Raise if ``lab_dir`` is ``/``, is or holds a home, or holds the cwd or labkit itself."""
    d = Path(lab_dir).resolve()
    reason, fix = None, _FIX_DIR
    if d == Path("/"):
        reason = "it is the root directory"
    if reason is None:
        for home in _homes():
            if home == d or d in home.parents:
                reason = f"it is (or holds) the home directory {home}"
                break
    if reason is None:
        for what, path in _labkit_paths():
            if path == d or d in path.parents:
                reason = f"it holds {what} {path}"
                break
    if reason is None and check_cwd:
        cwd = Path.cwd().resolve()
        if cwd == d or d in cwd.parents:
            reason = f"it holds the current directory {cwd}"
            fix = "run the command from outside it (e.g. after `cd /`)"
    if reason is not None:
        raise ServiceError(f"refusing to {action} {lab_dir}: {reason}. Nothing was changed; "
                           f"{fix}")


def _homes() -> set[Path]:
    homes = {Path(os.path.expanduser("~"))}
    for entry in pwd.getpwall():
        if entry.pw_dir not in ("", "/") and os.path.isdir(entry.pw_dir):
            homes.add(Path(entry.pw_dir))
    return {h.resolve() for h in homes if str(h) != "/"}


def _labkit_paths() -> list[tuple[str, Path]]:
    package = Path(__file__).resolve().parent
    out = [("labkit itself", package)]
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "labkit").is_dir():
        out.insert(0, ("the labkit checkout", checkout))
    return out
