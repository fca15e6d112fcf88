"""`labkit render`: an executed, rendered HTML copy of every notebook, to compare a run with.

Each notebook is executed top to bottom by nbclient in a fresh kernel whose environment is
the running lab's (``lab.env()``, as `labkit up --jupyter` gives JupyterLab), so its
``lk.up()`` reattaches to that lab; then nbconvert's HTMLExporter writes it. A first cell
says where and when it ran and how long it took (host, cores, memory, load, Python). A
notebook that fails is still written, up to and including the failing cell, and reported.

    labkit render                                   # every notebooks/NN_*.ipynb
    labkit render notebooks/00_lab_tour.ipynb --out rendered/
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from labkit.experiments.results import describe, machine

CELL_TIMEOUT_S = 900  # notebook 13's longest cells run minutes on 2 loaded cores


@dataclass
class Rendered:
    notebook: Path
    html: Path
    seconds: float
    error: str = ""  # the failing cell's error, "" when every cell ran


def _banner(seconds: float, error: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    status = (f"**stopped at an error**: `{error}`" if error
              else "every cell ran without an error")
    return (f"*Rendered by `labkit render`: executed {when} on "
            f"{describe(machine(), ' at the end')} in {seconds:.0f} s; {status}.*")


def render_one(path: Path, out_dir: Path, env: Mapping[str, str], *,
               cell_timeout_s: int = CELL_TIMEOUT_S) -> Rendered:
    """Execute ``path`` in a kernel with ``env`` and write ``out_dir/<name>.html``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    t0 = time.monotonic()
    for attempt in (1, 2):
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=cell_timeout_s, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        error = ""
        try:
            client.execute(env=dict(env))
        except CellExecutionError as e:
            error = (getattr(e, "ename", "") + ": " + getattr(e, "evalue", "")).strip(": ") \
                or str(e).strip().splitlines()[-1]
        except Exception as e:  # the kernel died or never started: say so, go on to the next
            error = f"kernel: {type(e).__name__}: {e}"
            # jupyter_client picks free TCP ports before the kernel binds them: on a busy
            # machine another process can take one first (ZMQError: address in use). Once more.
            if attempt == 1 and not any(c.get("execution_count") for c in nb.cells):
                continue
        break
    seconds = time.monotonic() - t0
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(_banner(seconds, error)))
    body, _ = HTMLExporter().from_notebook_node(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / f"{path.stem}.html"
    html.write_text(body)
    return Rendered(path, html, round(seconds, 1), error)


def render(paths: list[Path], out_dir: Path, env: Mapping[str, str], *,
           log: Callable[[str], None] = print) -> list[Rendered]:
    """``render_one`` for every notebook in ``paths``, in order; each one's outcome."""
    done = []
    for path in paths:
        log(f"[render] {path} ...")
        r = render_one(path, out_dir, env)
        log(f"[render] {r.html}: {r.seconds:.0f} s" + (f", ERROR {r.error}" if r.error else ""))
        done.append(r)
    return done
