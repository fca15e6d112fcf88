"""Compiled hot paths, each beside its pure-Python twin, and which one is running.

A kernel is a pure-Python module (``feedscore.py``, the reference) and a Cython module
(``_feedscore.pyx``) with the same functions; ``setup.py`` compiles the ``.pyx`` at install
time (``pip install -e .`` builds it in place). ``load("feedscore")`` returns the compiled
module when it imports, else the pure twin, so the lab works without a C compiler, only
slower; ``status()`` says which one is active and why (``labkit doctor`` prints it).
``implementations("feedscore")`` gives every variant that is here, the plain-C one
(``feedscore.c`` through ``_feedscore_c.pyx``) included, for timing them side by side.

Introduced in notebooks/11_cython_and_memory.ipynb.

>>> from labkit import speedups
>>> speedups.load("feedscore").score_candidates  # doctest: +SKIP
<cyfunction score_candidates at 0x...>
>>> [s.active for s in speedups.status()]         # doctest: +SKIP
['cython']
"""

from __future__ import annotations

import importlib
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
# kernel -> (pure twin, Cython module, plain C through Cython's extern, or None)
KERNELS: dict[str, tuple[str, str, str | None]] = {
    "feedscore": ("labkit.speedups.feedscore", "labkit.speedups._feedscore",
                  "labkit.speedups._feedscore_c"),
}
# What each extension is built from (setup.py), to notice an edit made since the build.
SOURCES = {"labkit.speedups._feedscore": ("_feedscore.pyx",),
           "labkit.speedups._feedscore_c": ("_feedscore_c.pyx", "feedscore.c", "feedscore.h")}
REBUILD = "rebuild with `.venv/bin/pip install -e .` (or `bash containers/bootstrap.sh`)"


@dataclass(frozen=True)
class KernelStatus:
    """Which implementation of a kernel ``load`` returns, and why."""

    kernel: str
    active: str  # "cython" or "pure"
    module: str
    reason: str
    c_available: bool = False

    @property
    def ok(self) -> bool:
        return self.active == "cython"


def _kernel(name: str) -> tuple[str, str, str | None]:
    try:
        return KERNELS[name]
    except KeyError:
        raise ValueError(f"no kernel {name!r}; the kernels are {', '.join(KERNELS)}") from None


def _import(module: str) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(module), ""
    except ImportError as e:
        return None, str(e)


def load(name: str) -> ModuleType:
    """The compiled module of kernel ``name`` when it was built, else its pure-Python twin."""
    pure, compiled, _ = _kernel(name)
    module, _ = _import(compiled)
    return module if module is not None else importlib.import_module(pure)


def implementations(name: str) -> dict[str, ModuleType]:
    """Every variant of kernel ``name`` that imports here: ``python``, ``cython``, ``c``."""
    pure, compiled, c = _kernel(name)
    found = {"python": importlib.import_module(pure)}
    for label, module_name in (("cython", compiled), ("c", c)):
        if module_name:
            module, _ = _import(module_name)
            if module is not None:
                found[label] = module
    return found


def status() -> list[KernelStatus]:
    """For each kernel: the active implementation and why (for ``labkit doctor``)."""
    rows = []
    for name, (pure, compiled, c) in KERNELS.items():
        module, error = _import(compiled)
        c_ok = bool(c) and _import(c)[0] is not None
        if module is None:
            rows.append(KernelStatus(name, "pure", pure, f"{compiled} did not import "
                                     f"({error}); {why_not_compiled()}", c_ok))
            continue
        reason = f"compiled from {Path(module.__file__).name}"
        stale = _stale(compiled)
        if stale:
            reason += f"; but {stale} changed since it was built: {REBUILD}"
        rows.append(KernelStatus(name, "cython", compiled, reason, c_ok))
    return rows


def why_not_compiled() -> str:
    """The likely reason the extensions were not built here, and the fix."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        return (f"no C compiler ({cc}) on PATH: install it (`apt-get install gcc`, macOS: "
                f"`xcode-select --install`), then {REBUILD}")
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.exists():
        return (f"no Python headers ({include} is missing): install them (`apt-get install "
                f"python3-dev`), then {REBUILD}")
    return f"a compiler and headers are here, so the build was skipped or failed: {REBUILD}"


def _stale(module_name: str) -> str | None:
    """The name of a source newer than the built extension, if any (an edited .pyx)."""
    module = importlib.import_module(module_name)
    built = Path(module.__file__).stat().st_mtime
    for source in SOURCES.get(module_name, ()):
        if (HERE / source).exists() and (HERE / source).stat().st_mtime > built:
            return source
    return None
