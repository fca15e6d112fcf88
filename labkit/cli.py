"""The `labkit` command: up, status, down, reset, doctor, env, jupyter.

    labkit up [--services postgres,memcached,rabbitmq] [--followers N] [--cassandra ring]
              [--provider native|external|docker] [--backend]
              [--jupyter [--no-browser] [--notebook-dir DIR]]
    labkit status
    labkit env
    labkit reset [--yes]
    labkit down [--purge]
    labkit doctor
    labkit images build [--services postgres,memcached,rabbitmq]
    labkit experiment herd --clients 256 --lease meta --out results.json
    labkit experiment consistency --phases baseline,slow,outage --out results.json
    labkit experiment chaos --duration 60 --rate 8 --faults all --out chaos.json
    labkit report [--quick] [--collect-only] [--out DIR]
    labkit render [NOTEBOOK...] [--out DIR]
    labkit exercises build [--check]
    labkit exercises release DIR
    labkit grade PATH... [--out DIR] [--export canvas|gradescope] [--cassandra ring] [--insecure]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from labkit import providers
from labkit._proc import ServiceError, package_for
from labkit.config import (ALL_SERVICES, CASSANDRA_TOPOLOGIES, PROVIDERS, ConfigError,
                           ConfigWarning, LabConfig)
from labkit.lab import Lab
from labkit.providers import Verdict
from labkit.providers.native import binary_checks

REPO = Path(__file__).resolve().parents[1]


def _config(args: argparse.Namespace) -> LabConfig:
    services = None
    if getattr(args, "services", None):
        services = tuple(s.strip() for s in args.services.split(",") if s.strip())
    return LabConfig.load(services=services, followers=getattr(args, "followers", None),
                          cassandra=getattr(args, "cassandra", None),
                          provider=getattr(args, "provider", None),
                          lab_dir=getattr(args, "lab_dir", None))


def jupyter_dir() -> Path:
    """Where JupyterLab opens: the repository root in a checkout (so ``notebooks/`` and
    ``exercises/`` are both reachable), else the current directory."""
    if (REPO / "pyproject.toml").is_file() and (REPO / "notebooks").is_dir():
        return REPO
    return Path.cwd()


def cmd_up(args: argparse.Namespace) -> int:
    if args.backend:  # the whole backend needs every server, two followers and the ring
        args.services = args.services or ",".join(ALL_SERVICES)
        args.followers = 2 if args.followers is None else args.followers
        args.cassandra = args.cassandra or "ring"
    lab = Lab.up(_config(args))
    print(lab.topology())
    if args.backend:
        backend = lab.backend.start()
        print(f"\nbackend {backend.name}: web on {backend.web.url()}\n{lab.helper_table()}")
    if args.jupyter:
        return _jupyter(lab, args.notebook_dir or jupyter_dir(), args.no_browser)
    return 0


def _jupyter(lab: Lab, root: Path, no_browser: bool) -> int:
    """Run JupyterLab on ``root`` with the lab's settings in its kernels' environment.

    On 127.0.0.1 only, on a free port, with a token of its own (printed in the URL), unless
    Jupyter's own ``JUPYTER_PORT`` / ``JUPYTER_TOKEN`` say otherwise. No browser is opened when
    asked, in CI, or where there is no display to open one on (a server, a container): the
    URL is printed instead.
    """
    import secrets
    from labkit._proc import PortAllocator
    port = int(os.environ.get("JUPYTER_PORT") or PortAllocator("127.0.0.1").take())
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_urlsafe(24)
    headless = (os.environ.get("CI") or sys.platform.startswith("linux")
                and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={root}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    if no_browser or headless:
        cmd.append("--no-browser")
    print(f"\nJupyterLab on {root}: http://127.0.0.1:{port}/lab?token={token}\n"
          "(stop it with Ctrl-C; the lab keeps running)", flush=True)
    return subprocess.call(cmd, env={**os.environ, **lab.env()})


def cmd_status(args: argparse.Namespace) -> int:
    try:
        lab = Lab.attach(_config(args))
    except ServiceError as e:
        print(e)
        return 1
    rows = lab.health()
    where = "" if lab.provider.manages else " (external servers: labkit starts and stops none)"
    print(f"lab {lab.config.lab_dir}{where}\n{lab.status_table(rows)}")
    helpers = lab.helper_health()
    if helpers:
        print(f"\n{lab.helper_table(helpers)}")
    notes = lab.warnings()
    if notes:
        print("\nnot as `labkit up` left it:\n" + "\n".join(f"  - {n}" for n in notes))
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_env(args: argparse.Namespace) -> int:
    try:
        lab = Lab.attach(_config(args))
    except ServiceError as e:
        print(f"# {e}", file=sys.stderr)
        return 1
    for k, v in lab.env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    report = Lab(_config(args)).down(purge=args.purge)
    print("\n".join(report.lines()))
    return 0


RESET_HELP = ("put the running lab back to its starting state: stop helper processes "
              "(invalidation services, Celery workers, web servers started from notebooks), "
              "follower delays to 0, synchronous_commit to the configured default, DROP every "
              "database except postgres/template0/template1 and every logical replication "
              "slot, DELETE every queue in the lab's RabbitMQ vhost, flush memcached. The "
              "servers keep running; asks first (--yes when stdin is not a terminal)")


def cmd_reset(args: argparse.Namespace) -> int:
    lab = Lab.attach(_config(args))
    plan = lab.reset(dry_run=True)
    if not lab.provider.manages:
        print(f"lab {lab.config.lab_dir} runs on external servers: labkit reset stops only the "
              "lab's helper processes; the servers' data is not the lab's to drop")
    if not plan:
        print(f"lab {lab.config.lab_dir} is in its starting state: nothing to reset")
        return 0
    print(f"labkit reset of lab {lab.config.lab_dir} will:\n" + "\n".join(f"  - {p}" for p in plan))
    if not args.yes:
        if not sys.stdin.isatty():
            print("labkit reset: stdin is not a terminal, so nobody can confirm; run "
                  "`labkit reset --yes` to go ahead. Nothing was changed.", file=sys.stderr)
            return 2
        if input("go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing was changed")
            return 1
    done = lab.reset()
    print("done:\n" + "\n".join(f"  - {d}" for d in done))
    return 0


# ---------------------------------------------------------------------------------- doctor

def doctor_checks(cfg: LabConfig) -> list[tuple[str, bool, str, str]]:
    """(what, ok, found, needed) for every binary the lab needs (the native provider's)."""
    return binary_checks(cfg)


def cmd_doctor(args: argparse.Namespace) -> int:
    """The binaries, the kernels, and which providers can run here; 1 if the lab's own cannot."""
    cfg = _config(args)
    checks = doctor_checks(cfg)
    print(f"{'binary':<15} {'status':<7} {'found':<28} needed")
    for what, ok, found, needed in checks:
        print(f"{what:<15} {'ok' if ok else 'MISSING':<7} {found:<28} {needed}")
    _print_speedups()
    verdicts = _print_providers(cfg)
    missing = [what for what, ok, *_ in checks if not ok]
    if "toxiproxy" in missing:  # no Debian package: bootstrap builds the pinned release with Go
        missing.remove("toxiproxy")
        print("\nToxiproxy: `bash containers/bootstrap.sh` builds v2.8.0 with Go "
              "(macOS: brew install toxiproxy)")
    if missing:
        debs = sorted({package_for(w)[0] for w in missing})
        brews = sorted({package_for(w)[1] for w in missing})
        print("\nTo install what is missing:")
        print(f"  Debian/Ubuntu:    sudo apt-get install -y {' '.join(debs)}")
        print(f"  macOS (Homebrew): brew install {' '.join(brews)}")
    if not verdicts[cfg.provider].ok:
        return 1
    if cfg.provider == "native":
        print(f"\nall binaries found; lab directory: {cfg.lab_dir}")
    else:
        print(f"\nthe {cfg.provider} provider can run; lab directory: {cfg.lab_dir}")
    return 0


def _print_providers(cfg: LabConfig) -> dict[str, Verdict]:
    """Which providers can run here, and why (not); the one the config chooses is marked."""
    verdicts = {p.name: p.check(cfg) for p in providers.PROVIDERS.values()}
    print(f"\n{'provider':<15} {'can run':<8} why")
    for v in verdicts.values():
        chosen = "  (this lab's)" if v.provider == cfg.provider else ""
        print(f"{v.provider:<15} {'yes' if v.ok else 'no':<8} {v.why}{chosen}")
        for line in v.details:
            print(f"{'':<24} {line}")
    return verdicts


def _print_speedups() -> None:
    """Which implementation of each hot kernel runs (compiled or pure Python), and why.

    Not a failure when pure: the lab works without a C compiler, only slower.
    """
    from labkit import speedups
    print(f"\n{'kernel':<15} {'active':<7} why")
    for s in speedups.status():
        c = "; plain-C variant built" if s.c_available else ""
        print(f"{s.kernel:<15} {s.active:<7} {s.reason}{c}")


# ----------------------------------------------------------------------------- experiments
# `labkit experiment NAME ...`: each experiment module gives `add_arguments(parser)`,
# `check_args(args)` (what is wrong, before any server starts) and `run_cli(args, lab)`; the
# options and the run live there. Registered here by name, with the
# one-line help, so a new experiment joins in one line.
EXPERIMENTS = {
    "herd": ("labkit.experiments.herd",
             "DB queries per hot-key expiry, with and without leases"),
    "consistency": ("labkit.experiments.consistency",
                    "Cassandra t-visibility per (W, R), slow and stopped replicas, convergence"),
    "canary": ("labkit.experiments.canary",
               "canary releases judged against a baseline: rollbacks and detection time per judge"),
    "akkio": ("labkit.experiments.akkio",
              "static placement vs Akkio migration vs full replication over two regions"),
    "chaos": ("labkit.experiments.chaos",
              "the whole backend under open-loop load with faults injected; history checked"),
}


def _experiment_runner(module_name: str):
    def run(args: argparse.Namespace) -> int:
        import importlib
        module = importlib.import_module(module_name)
        problem = module.check_args(args)  # before any server starts: bad input changes nothing
        if problem:
            print(f"labkit experiment {args.experiment}: {problem}", file=sys.stderr)
            return 2
        return module.run_cli(args, Lab.up(_config(args)))
    return run


def _missing_extra(name: str, error: ImportError):
    def run(args: argparse.Namespace) -> int:
        print(f"labkit experiment {name} needs the lab's backend packages ({error.name} is "
              "missing); install them with `pip install 'labkit[backend]'` (the README's "
              "`containers/bootstrap.sh` does)", file=sys.stderr)
        return 2
    return run


def _add_experiment_parsers(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    """`labkit experiment NAME`: NAME's module is imported only when the command line names it.

    An experiment's module brings the backend (Celery, SciPy: about a second); `labkit status`
    and the other commands do without it.
    """
    import importlib
    p = sub.add_parser("experiment", help="run an experiment on the lab's servers")
    experiments = p.add_subparsers(dest="experiment", required=True)
    for name, (module_name, help_text) in EXPERIMENTS.items():
        e = experiments.add_parser(name, help=help_text)
        if "experiment" not in argv or name not in argv:
            continue  # not asked for: its arguments cannot be parsed
        try:  # the experiments need the backend extra; `labkit up/down` must not
            importlib.import_module(module_name).add_arguments(e)
        except ImportError as error:
            e.set_defaults(func=_missing_extra(name, error))
            continue
        e.set_defaults(func=_experiment_runner(module_name))


# ------------------------------------------------------------------------- report and render
# `labkit report` (labkit.report: every published figure beside the lab's) and `labkit render`
# (labkit.render: an executed HTML copy of every notebook).

def cmd_report(args: argparse.Namespace) -> int:
    from labkit import report
    cfg = _config(args)
    registry = {name: module_name for name, (module_name, _) in EXPERIMENTS.items()}
    out = args.out or cfg.lab_dir / "report"
    t0 = time.monotonic()
    outcomes = None if args.collect_only else report.run(cfg.lab_dir, registry, quick=args.quick)
    how = "labkit report" + (" --collect-only" if args.collect_only else "") + \
        (" --quick" if args.quick else "")
    html, md = report.write(cfg.lab_dir, registry, out, outcomes=outcomes, how=how)
    print(f"report: {html}\n        {md}\n({time.monotonic() - t0:.0f} s)")
    return 1 if outcomes and any(o.returncode for o in outcomes.values()) else 0


def cmd_render(args: argparse.Namespace) -> int:
    from labkit import render
    cfg = _config(args)
    lab = Lab.attach(cfg)  # executed against the running lab: start it with `labkit up`
    paths = args.notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    done = render.render(paths, args.out or cfg.lab_dir / "rendered",
                         {**os.environ, **lab.env()})
    failed = [r for r in done if r.error]
    print(f"rendered {len(done) - len(failed)} of {len(done)} notebooks without an error"
          + "".join(f"\n  {r.notebook}: {r.error}" for r in failed))
    return 1 if failed else 0


def _add_report_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="run every experiment (or collect its latest results) and "
                       "write one HTML page and one Markdown file: published figure vs the lab's")
    p.add_argument("--quick", action="store_true",
                   help="small parameters (each experiment's QUICK_ARGS): minutes, not hours")
    p.add_argument("--collect-only", action="store_true",
                   help="run nothing: report the latest results in <lab_dir>/results")
    p.add_argument("--out", type=Path, help="folder for report.html, report.md and the plots "
                                            "(default <lab_dir>/report)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("render", help="execute every notebook against the running lab and write "
                       "it as HTML, with the machine it ran on")
    p.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    p.add_argument("--out", type=Path, help="default <lab_dir>/rendered")
    p.set_defaults(func=cmd_render)


# --------------------------------------------------------------------- exercises and grading
# `labkit exercises build [--check]` and `labkit grade PATH... [--out DIR]`: the work is done
# in labkit.grading (format, generator, autograder).

def cmd_exercises_build(args: argparse.Namespace) -> int:
    from labkit.grading import build_exercises
    changed = build_exercises(args.solutions, args.exercises, check=args.check)
    if args.check:
        if changed:
            print("out of date with solutions/: " + ", ".join(str(p) for p in changed)
                  + "\nrun `labkit exercises build` and commit the result")
            return 1
        print(f"{args.exercises} is up to date with {args.solutions}")
        return 0
    print(f"wrote {len(changed)} exercise(s)" + "".join(f"\n  {p}" for p in changed))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from labkit.grading.grader import InsecureRefused, Limits, check_isolation, grade
    limits = Limits(cell_timeout_s=args.cell_timeout_s, submission_timeout_s=args.timeout_s,
                    cpu_s=args.cpu_s, memory_mb=args.memory_mb, pids=args.pids,
                    disk_mb=args.disk_mb)
    try:  # before starting anything: refuse early, with what is missing
        check_isolation(args.insecure)
    except InsecureRefused as e:
        print(f"labkit grade: {e}", file=sys.stderr)
        return 2
    lab = Lab.up(_config(args))
    results = grade(args.paths, lab, args.out, solutions_dir=args.solutions, limits=limits,
                    jobs=args.jobs, insecure=args.insecure, exports=tuple(args.export))
    if args.roster and args.export:
        from labkit.grading import export
        for kind in args.export:
            export.EXPORTS[kind](results, args.out / f"{kind}.csv", roster=args.roster)
    for r in results:
        note = f"  ({'; '.join(r['errors'])})" if r["errors"] else ""
        print(f"{r['score']:>5g} / {r['max_score']:<5g} {r['submission']}{note}")
    print(f"gradebook: {args.out / 'gradebook.csv'}; feedback: {args.out}/*.md"
          + "".join(f"; {k}: {args.out / (k + '.csv')}" for k in args.export))
    return 0


def cmd_exercises_release(args: argparse.Namespace) -> int:
    from labkit.grading.release import release
    try:
        written = release(REPO, args.dest, solutions_dir=args.solutions)
    except (FileExistsError, ValueError) as e:
        print(f"labkit exercises release: {e}", file=sys.stderr)
        return 2
    print(f"wrote a student release of {written} files to {args.dest} (no solutions/, no "
          "hidden tests, no instructor guide)")
    return 0


def _add_grading_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exercises", help="student copies of the solution notebooks")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="generate exercises/ from solutions/")
    b.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of date")
    b.add_argument("--solutions", type=Path, default=REPO / "solutions")
    b.add_argument("--exercises", type=Path, default=REPO / "exercises")
    b.set_defaults(func=cmd_exercises_build)
    r = actions.add_parser("release", help="write a student release of the repository: no "
                           "solutions/, no hidden tests, exercises rebuilt")
    r.add_argument("dest", type=Path, help="a new (or empty) directory")
    r.add_argument("--solutions", type=Path, default=REPO / "solutions")
    r.set_defaults(func=cmd_exercises_release)
    g = sub.add_parser("grade", help="grade submitted notebooks against the lab's servers")
    g.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders of them")
    g.add_argument("--out", type=Path, default=Path("grades"), help="reports and gradebook.csv")
    g.add_argument("--solutions", type=Path, default=REPO / "solutions")
    g.add_argument("--jobs", type=int, default=2, help="submissions graded at once")
    g.add_argument("--cell-timeout-s", type=float, default=30.0)
    g.add_argument("--timeout-s", type=float, default=300.0, help="per submission")
    g.add_argument("--cpu-s", type=int, default=120, help="CPU seconds per submission")
    g.add_argument("--memory-mb", type=int, default=2048, help="memory per submission (cgroup)")
    g.add_argument("--pids", type=int, default=128, help="processes per submission (cgroup)")
    g.add_argument("--disk-mb", type=int, default=256, help="scratch disk (its private /tmp)")
    g.add_argument("--export", action="append", default=[], choices=("canvas", "gradescope"),
                   help="also write the gradebook as Canvas's or Gradescope's import CSV")
    g.add_argument("--roster", type=Path, help="CSV student,name,sis_id,email,section for "
                   "the exports (student = the submission's folder name)")
    g.add_argument("--cassandra", choices=CASSANDRA_TOPOLOGIES,
                   help="also start Cassandra (assignments whose metadata labkit.uses names "
                        "cassandra need the ring, regions the regions)")
    g.add_argument("--insecure", action="store_true",
                   help="grade even where submissions cannot be isolated (not root, no bwrap, "
                        "no cgroup): only for notebooks you trust")
    g.set_defaults(func=cmd_grade)


def cmd_images_build(args: argparse.Namespace) -> int:
    """Build the docker provider's images that are missing (the base too); reuse the rest."""
    from labkit.providers import docker, images
    wanted = tuple(args.services.split(",")) if args.services else images.SERVICES
    args.services = None  # images, not the lab's servers: not a setting of the config
    cfg = _config(args)
    t0 = time.monotonic()
    built = images.build_all(docker.client(cfg.docker_host), wanted, config=cfg)
    for service, tag in built.items():
        print(f"{service:<10} {tag}")
    print(f"images ready in {time.monotonic() - t0:.1f} s")
    return 0


def _add_images_parsers(sub: Any) -> None:
    p = sub.add_parser("images", help="the docker provider's images (built here, by content hash)")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="build the missing images (and the debian:bookworm base)")
    from labkit.providers.images import SERVICES
    b.add_argument("--services", help=f"comma-separated, from {','.join(SERVICES)} "
                                      "(default: every image)")
    b.set_defaults(func=cmd_images_build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab-dir", type=Path, help="lab directory (default: LABKIT_LAB_DIR, "
                                                     "lab.toml, or the per-user default)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start the lab (or reattach to it)")
    p.add_argument("--services", help=f"comma-separated, from {','.join(ALL_SERVICES)}")
    p.add_argument("--followers", type=int, help="PostgreSQL followers (default 1)")
    p.add_argument("--cassandra", choices=CASSANDRA_TOPOLOGIES,
                   help="also start Cassandra: 1 node, a 3-node ring, or two regions (us, eu)")
    p.add_argument("--provider", choices=PROVIDERS,
                   help="who runs the servers: native (default), external (the servers "
                        "lab.toml's [external] names), or docker (containers)")
    p.add_argument("--backend", action="store_true",
                   help="also start the whole backend (notebook 12): web under gunicorn, "
                        "invalidation service, Celery workers, feeds on the Cassandra ring, "
                        "Toxiproxy between the web tier and Memcached")
    p.add_argument("--jupyter", action="store_true",
                   help="then open JupyterLab at the repository root (notebooks/, exercises/)")
    p.add_argument("--no-browser", action="store_true", help="with --jupyter: print the URL "
                   "only (the default in CI and where there is no display)")
    p.add_argument("--notebook-dir", type=Path,
                   help="with --jupyter: open JupyterLab on this directory instead")
    p.set_defaults(func=cmd_up)
    sub.add_parser("status", help="health, version, address and lag of every server"
                   ).set_defaults(func=cmd_status)
    sub.add_parser("env", help="connection settings as export lines").set_defaults(func=cmd_env)
    p = sub.add_parser("reset", help=RESET_HELP, description=RESET_HELP)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_reset)
    p = sub.add_parser("down", help="stop every server and helper process of the lab")
    p.add_argument("--purge", action="store_true",
                   help="also delete the lab's data (only what the lab made in its directory)")
    p.set_defaults(func=cmd_down)
    sub.add_parser("doctor", help="check the installed servers").set_defaults(func=cmd_doctor)
    argv = sys.argv[1:] if argv is None else argv
    _add_experiment_parsers(sub, argv)
    _add_report_parsers(sub)
    _add_grading_parsers(sub)
    _add_images_parsers(sub)
    args = parser.parse_args(argv)
    warnings.showwarning = _show_config_warning
    try:
        return args.func(args)
    except (ServiceError, ConfigError) as e:
        print(f"labkit {args.command}: {e}", file=sys.stderr)
        return 2


_default_showwarning = warnings.showwarning


def _show_config_warning(message, category, *args, **kwargs) -> None:
    """A ConfigWarning reads as `labkit: warning: ...`, without a source line."""
    if issubclass(category, ConfigWarning):
        print(f"labkit: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, *args, **kwargs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
