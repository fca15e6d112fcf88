"""`labkit report`: every published figure beside the lab's, on one HTML page and in Markdown.

For each mechanism: the published figure, its source and conditions (``published.py``), the
lab's measured figure from the latest saved run of its experiment
(``<lab_dir>/results/<experiment>.json``, written by ``labkit.experiments.results``), the
machine and parameters of that run, its plot, and where the lab's scale differs. An
experiment that never ran (or failed) is shown as such, with the command that runs it.

``run`` runs the experiments first, each as ``labkit experiment NAME`` in a child process
(one experiment's threads, drivers and JVM sessions cannot leak into the next, and a failure
is recorded and the report goes on); ``--quick`` passes each module's ``QUICK_ARGS``.

    labkit report --quick            # run every experiment small, then write the report
    labkit report --collect-only     # only read the latest results
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from labkit.experiments import results as saved
from labkit.report.published import PUBLISHED, Published, for_experiment

#: name -> module name, as in labkit.cli.EXPERIMENTS (passed in: the report does not import
#: the command line)
Registry = Mapping[str, str]
STDERR_TAIL_LINES = 15


@dataclass
class Outcome:
    """What running one experiment for the report did."""

    name: str
    command: str
    returncode: int
    seconds: float
    stderr_tail: str = ""


@dataclass
class Section:
    name: str
    published: list[Published]
    envelope: dict[str, Any] | None
    outcome: Outcome | None
    measured: list[str] = field(default_factory=list)
    plot_png: bytes | None = None
    plot_error: str = ""


def experiment_argv(name: str, module_name: str, quick: bool) -> list[str]:
    """The ``labkit experiment`` arguments the report runs for ``name``."""
    args = list(getattr(importlib.import_module(module_name), "QUICK_ARGS", ())) if quick else []
    return ["experiment", name, *args]


def _needs_cassandra(module_name: str) -> bool:
    """Whether the experiment's command brings Cassandra up (its parser's default says so)."""
    import argparse
    parser = argparse.ArgumentParser()
    importlib.import_module(module_name).add_arguments(parser)
    return parser.get_default("cassandra") is not None


def run(lab_dir: Path, registry: Registry, *, quick: bool,
        log: Callable[[str], None] = print) -> dict[str, Outcome]:
    """Run every registered experiment on the lab in ``lab_dir``; what each run did.

    Those without Cassandra run first: a later ``Lab.up`` reattaches to every server the lab
    has, so a Cassandra node that failed to start would otherwise fail them too.
    """
    outcomes = {}
    for name, module_name in sorted(registry.items(), key=lambda kv: _needs_cassandra(kv[1])):
        argv = experiment_argv(name, module_name, quick)
        shown = shlex.join(["labkit", *argv])
        log(f"[report] {shown}")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir),
                               *argv], stderr=subprocess.PIPE, text=True)  # stdout: ours
        seconds = time.monotonic() - t0
        tail = "\n".join(proc.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        if proc.returncode:
            sys.stderr.write(proc.stderr)
        log(f"[report] {name}: {'ok' if proc.returncode == 0 else 'FAILED'} in {seconds:.0f} s")
        outcomes[name] = Outcome(name, shown, proc.returncode, round(seconds, 1), tail)
    return outcomes


def _plot(module: Any, data: Any) -> bytes:
    import io

    import matplotlib
    matplotlib.use("Agg")  # no display: the report runs in terminals and CI
    import matplotlib.pyplot as plt
    ax = module.plot_result(data)
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(ax.figure)
    return buf.getvalue()


def sections(lab_dir: Path, registry: Registry,
             outcomes: Mapping[str, Outcome] | None = None) -> list[Section]:
    """One section per registered experiment, from its latest saved results."""
    out = []
    for name, module_name in registry.items():
        envelope = saved.load(lab_dir, name)
        outcome = (outcomes or {}).get(name)
        if outcome and outcome.returncode:
            envelope = None  # an older result would pass for this run's
        s = Section(name, for_experiment(name), envelope, outcome)
        if envelope is not None:
            module = importlib.import_module(module_name)
            try:
                s.measured = module.headline(envelope["data"])
                s.plot_png = _plot(module, envelope["data"])
            except Exception as e:  # a result file from an older version must not stop the page
                s.plot_error = f"{type(e).__name__}: {e}"
        out.append(s)
    return out


def _when(envelope: dict[str, Any]) -> str:
    return (f"{envelope['finished_at']} on {saved.describe(envelope['machine'])}; took "
            f"{envelope['duration_s']} s")


def _not_run(s: Section, quick_cmd: str) -> str:
    if s.outcome and s.outcome.returncode:
        return f"failed (exit {s.outcome.returncode}) running `{s.outcome.command}`"
    return f"not run: `labkit experiment {s.name}` (quick: `{quick_cmd}`)"


def markdown(secs: list[Section], registry: Registry, *, title: str, header: str) -> str:
    """The report as Markdown; plots are ``<name>.png`` beside it."""
    lines = [f"# {title}", "", header, "",
             "| mechanism | published | source | the lab | |", "|---|---|---|---|---|"]
    by_exp = {s.name: s for s in secs}
    for p in PUBLISHED:
        s = by_exp.get(p.experiment) if p.experiment else None
        if p.experiment is None:
            lab = f"notebook {p.notebook} only"
        elif s is None or s.envelope is None:
            lab = "not run" if not (s and s.outcome and s.outcome.returncode) else "failed"
        else:
            lab = s.measured[0] if s.measured else "measured (see below)"
        link = f"[#{p.experiment}](#{p.experiment})" if p.experiment else ""
        lines.append(f"| {p.mechanism} | {p.figure} | [{p.source.short}]({p.source.url}) | "
                     f"{lab} | {link} |")
    for s in secs:
        quick_cmd = shlex.join(["labkit", *experiment_argv(s.name, registry[s.name], True)])
        lines += ["", f'<a id="{s.name}"></a>', "", f"## {s.name}", ""]
        for p in s.published:
            lines += [f"**Published** ({p.mechanism}): {p.figure}.  ",
                      f"Conditions: {p.conditions}.  ",
                      f"Source: {p.source.citation}, <{p.source.url}>.  ",
                      f"Where the lab's scale differs: {p.scale}", ""]
        if s.envelope is None:
            lines.append(f"**The lab**: {_not_run(s, quick_cmd)}")
            if s.outcome and s.outcome.stderr_tail:
                lines += ["", "```", s.outcome.stderr_tail, "```"]
            continue
        lines += ["**The lab** measured:", ""] + [f"- {m}" for m in s.measured]
        if s.plot_error:
            lines += ["", f"(no figures: {s.plot_error}; run the experiment again)"]
        lines += ["", f"Run: {_when(s.envelope)}.  ", f"Command: `{s.envelope['command']}`  ",
                  "Parameters: " + ", ".join(f"{k}={v}" for k, v in s.envelope["params"].items())]
        if s.plot_png:
            lines += ["", f"![{s.name}]({s.name}.png)"]
    return "\n".join(lines) + "\n"


def page(md_text: str, secs: list[Section], *, title: str) -> str:
    """The report as one self-contained HTML page (plots embedded as PNG data URLs)."""
    import mistune  # nbconvert's Markdown renderer, already installed with it
    body = mistune.create_markdown(escape=False, plugins=["table"])(md_text)
    for s in secs:
        if s.plot_png:
            data = base64.b64encode(s.plot_png).decode()
            body = body.replace(f'src="{s.name}.png"', f'src="data:image/png;base64,{data}"')
    style = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .5em;"
             "vertical-align:top}img{max-width:100%}code{background:#f4f4f4}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n{body}\n</body></html>\n")


def write(lab_dir: Path, registry: Registry, out_dir: Path, *,
          outcomes: Mapping[str, Outcome] | None = None, how: str = "") -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and one PNG per measured experiment to ``out_dir``."""
    secs = sections(lab_dir, registry, outcomes)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    m = saved.machine()
    header = (f"Written {now} by `{how or 'labkit report'}` on {m['hostname']} ({m['cpus']} "
              f"cores, {m['memory_gib']} GiB) from the results in `{saved.results_dir(lab_dir)}`. "
              f"{sum(s.envelope is not None for s in secs)} of {len(secs)} experiments have "
              "results.")
    if outcomes:
        header += " This run: " + ", ".join(
            f"{o.name} {'ok' if not o.returncode else 'FAILED'} in {o.seconds:.0f} s"
            for o in outcomes.values()) + "."
    title = "Instagram Backend Lab: published figures and the lab's"
    md_text = markdown(secs, registry, title=title, header=header)
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in secs:
        if s.plot_png:
            (out_dir / f"{s.name}.png").write_bytes(s.plot_png)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(md_text)
    html_path.write_text(page(md_text, secs, title=title))
    return html_path, md_path
