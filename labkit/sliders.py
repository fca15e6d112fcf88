"""Sliders where a parameter is the lesson: rerun an experiment with other values, by hand.

``explore(run, clients=(1, 256), refill_ms=(1, 200))`` shows ipywidgets controls for ``run``'s
parameters and a *Run* button (an experiment takes seconds: it runs when asked, not on every
step of a slider), then calls ``run()`` once with its own defaults, in the cell, and returns
what it returned. So a notebook asserts on that default run (under ``pytest --nbval-lax`` it is
the only one), an error in it fails the cell, and a student moves the sliders and presses *Run*
to see the figure change. Controls are given as ``ipywidgets.interactive`` takes them: a
``(min, max[, step])`` tuple, a list of choices, a bool, or a widget.

>>> def herd_at(clients=64, refill_ms=20):          # doctest: +SKIP
...     r = herd.run_herd(dsn, lab.cache_servers, clients=clients, refill_ms=refill_ms)
...     print(r["queries_per_expiry"]); return r
>>> first = lk.explore(herd_at, clients=(1, 256), refill_ms=(1, 200))  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


def explore(run: Callable[..., Any], **controls: Any) -> Any:
    """Show controls for ``run``'s parameters and a *Run* button; return ``run()``'s result.

    Every control needs a default in ``run``'s signature (the value the sliders start at and
    the default run uses).
    """
    import ipywidgets as w
    from IPython.display import display
    defaults = {k: p.default for k, p in inspect.signature(run).parameters.items()}
    missing = [k for k in controls if defaults.get(k, inspect.Parameter.empty)
               is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"explore: give {run.__name__}'s parameter(s) {', '.join(missing)} a "
                         "default (def run(clients=64): ...): the sliders start there")
    # Parameters without a control keep their defaults (interactive would make one for each).
    fixed = {k: w.fixed(v) for k, v in defaults.items() if k not in controls}
    ui = w.interactive(run, {"manual": True, "manual_name": "Run"}, **controls, **fixed)
    for control in ui.kwargs_widgets:
        control.style = {"description_width": "initial"}
    display(ui)
    return run()
