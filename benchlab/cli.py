"""The ``benchlab`` command line.

Exit status: 0 success; 1 some job failed (the others kept their results);
2 invalid input (suite, arguments, unknown component, a directory another run
holds); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, as a batch system
sends before it kills a job), which stops a run exactly as Ctrl-C does.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

EXIT_OK, EXIT_FAILED_JOBS, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a command killed by SIGPIPE
EXIT_TERMINATED = 128 + 15  # ... and for one killed by SIGTERM


class _UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that it stops the same way."""


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`_Terminated` in the main thread.

    Only the first one: the shutdown it starts (finished jobs kept, a cluster
    closed, the lock released) is not interrupted by another. Outside the main
    thread, where handlers cannot be set, SIGTERM keeps its default action.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated

    before = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _err(message: str) -> None:
    print(f"benchlab: {message}", file=sys.stderr)


DEBUG_ENV = "BENCHLAB_DEBUG"


def _debug(args: argparse.Namespace | None = None) -> bool:
    """--debug or BENCHLAB_DEBUG=1: print the tracebacks that are otherwise kept in files."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(getattr(args, "debug", False))


def _registry():
    from benchlab.plugins import default_registry

    return default_registry()


# --------------------------------------------------------------------------- plugins


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry()
    registry.load_all()
    plugins = []
    for name in sorted(registry.plugins):
        info = registry.plugins[name]
        plugins.append({"name": name, "distribution": info.distribution,
                        "version": info.version,
                        "components": {k: sorted(v) for k, v in sorted(info.components.items())}})
        if info.libraries:
            plugins[-1]["libraries"] = list(info.libraries)
        if info.left_out:
            plugins[-1]["left_out"] = dict(sorted(info.left_out.items()))
    failures = [{"name": f.plugin, "distribution": f.distribution, "error": f.error}
                for f in registry.failures]
    collisions = [{"kind": c.kind, "name": c.name, "plugins": [p.plugin for p in c.providers],
                   "message": str(c)} for c in registry.collisions]
    available = [{"name": a.plugin, "distribution": a.distribution, "version": a.version,
                  "library": a.library, "prefix": a.prefix, "install": a.install}
                 for a in registry.available]
    if args.json:
        print(json.dumps({"plugins": plugins, "available": available, "failures": failures,
                          "collisions": collisions},
                         indent=2))
        return EXIT_OK
    for p in plugins:
        print(f"{p['name']}  ({p['distribution']} {p['version']})")
        if p.get("libraries"):
            print(f"    {'adapts:':12} {', '.join(p['libraries'])}")
        if not p["components"]:
            print("    (registers nothing)")
        for kind, names in p["components"].items():
            print(f"    {kind + 's:':12} {', '.join(names)}")
        for name, why in p.get("left_out", {}).items():
            print(f"    {'left out:':12} {name}: {why}")
    for a in available:
        print(f"{a['name']}  ({a['distribution']} {a['version']})  available: needs "
              f"{a['library']} ({a['prefix']}*); install with: {a['install']}")
    for f in failures:
        print(f"{f['name']}  ({f['distribution']})  FAILED TO LOAD: {f['error']}")
    for c in collisions:
        print(f"COLLISION: {c['message']}")
    return EXIT_OK


# --------------------------------------------------------------------------- suites


def _load(path: str, overrides: Sequence[str]):
    from benchlab.suite import load_suite

    return load_suite(path, _registry(), overrides)


def cmd_validate(args: argparse.Namespace) -> int:
    suite = _load(args.suite, args.set)
    from benchlab.jobs import expand

    jobs = expand(suite)
    _bounded(args, suite)
    kinds = {k: sum(j.kind == k for j in jobs) for k in ("train", "attack", "explain")}
    counted = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
    print(f"{args.suite}: ok ({counted} jobs{_sweeps_in_words(suite)})")
    return EXIT_OK


def _sweeps_in_words(suite) -> str:
    """"; sweeps: 4 model configurations over lr, width" for a suite with sweeps."""
    parts = []
    for section in ("models", "attacks", "explainers"):
        swept = [ref for ref in getattr(suite, section) if ref.swept is not None]
        if swept:
            axes = dict.fromkeys(k for ref in swept for k in ref.swept)
            parts.append(f"{len(swept)} {section[:-1]} configurations over {', '.join(axes)}")
    return f"; sweeps: {'; '.join(parts)}" if parts else ""


def _bounded(args: argparse.Namespace, suite) -> None:
    """Refuse a suite whose sweeps make more jobs than SWEEP_MAX_JOBS, unless allowed."""
    from benchlab.jobs import expand
    from benchlab.suite import Problem, SuiteError
    from benchlab.suite.schema import SWEEP_MAX_JOBS

    if not suite.swept or getattr(args, "allow_large_sweep", False):
        return
    count = len(expand(suite, suite.train.max_runs))
    if count > SWEEP_MAX_JOBS:
        raise SuiteError([Problem(args.suite, "", f"its sweeps expand to {count} jobs, more "
                                  f"than {SWEEP_MAX_JOBS}; pass --allow-large-sweep to run "
                                  "them all")])


def _checkpoint_every(text: str) -> str:
    if text in ("epoch", "off") or (text.isdigit() and len(text) < 10 and int(text) > 0):
        return text
    raise argparse.ArgumentTypeError(f"expected 'epoch', 'off' or a number of steps >= 1, "
                                     f"got {text!r}")


def _steps(every: str) -> int | None:
    return int(every) if every.isdigit() else None


def cmd_run(args: argparse.Namespace) -> int:
    from benchlab.runner import default_output_dir

    lock = None
    try:
        if args.resume:
            out = Path(args.resume)
            if out.exists() and not out.is_dir():
                raise _UsageError(f"--resume {out}: is a file; expected a run directory")
            if not (out / "suite.yaml").is_file():
                raise _UsageError(f"--resume {out}: no suite.yaml there; not a benchlab run "
                                  "directory")
            lock = _lock(out, "benchlab run --resume", f"--resume {out}")
            suite = _resumed_suite(out, args)
        else:
            if not args.suite:
                raise _UsageError("run: give a suite file (or --resume DIR)")
            suite = _load(args.suite, args.set)
            _bounded(args, suite)
            out, lock = (_claim(Path(args.out)) if args.out
                         else _claim_new(default_output_dir(suite)))
        return _run(args, suite, out)
    finally:
        if lock is not None:
            lock.release()


def _run(args: argparse.Namespace, suite, out: Path) -> int:
    """Run ``suite`` in ``out``, a directory this process has claimed."""
    from benchlab.runner import run_suite
    from benchlab.suite import SuiteError

    # The saved suite.yaml holds the suite as resolved, --set overrides included, so
    # the hint names no suite file; it repeats the options that say where jobs run.
    where = [f"--device {args.device}"] if args.device != "auto" else []
    if args.executor == "dask":
        where.append("--executor dask")
        where += [f"--workers {args.workers}"] if args.workers else []
        where += [f"--scheduler {shlex.quote(args.scheduler)}"] if args.scheduler else []
    if args.checkpoint_every != "epoch":
        where.append(f"--checkpoint-every {args.checkpoint_every}")
    where += [f"--track {shlex.quote(name)}" for name in dict.fromkeys(args.track)]
    resume_hint = " ".join(["benchlab run --resume", shlex.quote(str(out)), *where])
    executor = None
    if args.executor == "dask":
        from benchlab.executors.dask import DaskExecutor

        executor = DaskExecutor.factory(args.device, scheduler=args.scheduler,
                                        workers=args.workers)
    elif args.scheduler or args.workers:
        raise _UsageError("--scheduler and --workers apply to --executor dask only")
    trackers = _trackers(args, out)
    try:
        outcome = run_suite(suite, _registry(), out, device=args.device,
                            resume=bool(args.resume), executor=executor,
                            checkpoint=args.checkpoint_every != "off",
                            checkpoint_every=_steps(args.checkpoint_every), trackers=trackers)
    except ValueError as exc:
        if isinstance(exc, SuiteError):
            raise
        raise _UsageError(str(exc)) from None
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        _track_end(trackers, out, "interrupted")
        _err(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; {_finished(out)} "
             f"finished job(s) are kept in {out}. Continue with: {resume_hint}")
        print(out)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" writing {exc.filename}" if exc.filename else f" writing under {out}"
        raise _UsageError(f"{exc.strerror or exc}{where}; {_finished(out)} finished job(s) "
                          f"are kept in {out}. {_ENVIRONMENT_ERRNOS[exc.errno]}, then "
                          f"continue with: {resume_hint}") from None
    from benchlab.report import render

    render(out)
    _track_end(trackers, out, "failed" if outcome.failed else "finished", outcome)
    status = EXIT_OK
    if outcome.failed:
        _err(f"{len(outcome.failed)} job(s) failed (see summary.md):")
        for job_id, message in outcome.failed.items():
            log = out / "jobs" / f"{job_id}.log"
            _err(f"  {job_id}: {message}" + (f" (traceback: {log})" if log.is_file() else ""))
            if _debug(args) and log.is_file():
                print(log.read_text(errors="replace"), file=sys.stderr)
        status = EXIT_FAILED_JOBS
    ok = len(outcome.ran) - len(outcome.reused)
    reused = (f"{len(outcome.reused)} trained model(s) reused from the model cache; "
              if outcome.reused else "")
    tracked = "".join(f"; tracked with {name}" + (" until it failed (said above)"
                                                    if name in trackers.failed else "")
                      for name in trackers.names)
    print(f"ran {ok + len(outcome.failed)} job(s): {ok} ok, {len(outcome.failed)} failed; "
          f"{reused}{len(outcome.skipped)} already done; summary: {out / 'summary.md'}"
          f"{tracked}", file=sys.stderr)
    print(out)
    return status


def _trackers(args: argparse.Namespace, out: Path):
    """The sinks ``--track`` names, open for the run in ``out``."""
    from benchlab.tracking import TrackerError, Trackers, tracked_before

    if args.resume and not args.track and (before := tracked_before(out)):
        _err(f"this run was tracked with {', '.join(before)} before; add "
             f"--track {before[0]} to keep tracking it")
    try:
        return Trackers.open(args.track, _registry(), out,
                             log=lambda line: print(line, file=sys.stderr))
    except TrackerError as exc:
        raise _UsageError(str(exc)) from None


def _track_end(trackers, out: Path, status: str, outcome=None) -> None:
    """Tell the sinks the run ended, with its summary, tables and plots."""
    from benchlab.runlog import run_log
    from benchlab.sinks import RunEnded
    from benchlab.tracking import run_files

    if not trackers:
        return
    counts = (_finished(out), 0, 0) if outcome is None else (
        len(outcome.ran), len(outcome.failed), len(outcome.skipped))
    with run_log(out):
        trackers.end(RunEnded(status, *counts, files=run_files(out)))


def _resumed_suite(out: Path, args: argparse.Namespace):
    """The suite to resume ``out`` with, refused if it changes a job already finished there."""
    from benchlab.resume import ResumeConflict, added_jobs
    from benchlab.store import RunStore

    saved_path = out / "suite.yaml"
    saved = _load(str(saved_path), [])
    wanted = _load(args.suite, args.set) if args.suite else _load(str(saved_path), args.set)
    try:
        finished = [i for i, r in RunStore(out).records().items() if r.status == "ok"]
        added = added_jobs(saved, wanted, finished)
    except ResumeConflict as exc:
        raise _UsageError(f"--resume {out}: {exc}") from None
    if added:
        _err(f"resuming {out} with {len(added)} job(s) the saved suite did not have "
             f"({', '.join(added[:3])}{', ...' if len(added) > 3 else ''})")
    return wanted


def _lock(out: Path, command: str, option: str):
    """Claim the existing directory ``out`` for this process (see :mod:`benchlab.outdir`)."""
    from benchlab.outdir import lock

    return lock(out, command, option)


def _claim(out: Path):
    from benchlab.outdir import claim

    return claim(out)


def _claim_new(out: Path):
    from benchlab.outdir import claim_new

    return claim_new(out)


# The machine, not the suite or the code: the user can fix these and resume; what to do.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "Free space",
    errno.EDQUOT: "Free space or raise the disk quota",
    errno.EROFS: "Make the file system writable (or copy the run directory to one that is)",
    errno.EACCES: "Give yourself write permission there",
    errno.EPERM: "Give yourself write permission there",
}


def _finished(out: Path) -> int:
    from benchlab.store import RunStore

    try:
        return len(RunStore(out).finished_ok())
    except OSError:
        return 0


def cmd_report(args: argparse.Namespace) -> int:
    from benchlab.report import render
    from benchlab.runlog import run_log

    out = Path(args.dir)
    if not (out / "results.csv").exists():
        raise _UsageError(f"{out}: no results.csv there; not a benchlab run directory")
    # The report rewrites results.csv, summary.md and the plots: not while a run does.
    lock = _lock(out, "benchlab report", str(out))
    try:
        with run_log(out):
            damaged = _verify_run(out)
            for job_id, problem in damaged.items():
                _err(f"damaged job {job_id}: {problem}; left out of the report")
            if damaged:
                _err(f"redo the damaged job(s) with: benchlab run --resume {out}")
            path = render(out)
    finally:
        lock.release()
    print(path)
    return EXIT_FAILED_JOBS if damaged else EXIT_OK


def _verify_run(out: Path) -> dict[str, str]:
    """Rebuild results.csv from the job files that verify; the damaged jobs, by id.

    A copied run without its jobs/ folder is reported from results.csv as it is.
    """
    import pandas as pd

    from benchlab.store import RunStore, read_results

    store = RunStore(out)
    if not store.jobs_dir.is_dir():
        return {}
    good, damaged = store.verified()
    try:
        order = list(dict.fromkeys(read_results(out)["job"].astype(str)))
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        order = []
    order += sorted(good - set(order))
    store.write_results(order)
    return damaged


def cmd_compare(args: argparse.Namespace) -> int:
    from benchlab.compare import CompareError, compare
    from benchlab.compare_text import markdown, write

    try:
        comparison = compare(args.dirs, args.metric or None)
    except CompareError as exc:
        raise _UsageError(str(exc)) from None
    print(markdown(comparison), end="")
    if args.out:
        try:
            md, csv = write(comparison, Path(args.out))
        except OSError as exc:
            raise _UsageError(f"--out {args.out}: {exc.strerror or exc}") from None
        _err(f"comparison written to {md}, {md.with_suffix('.html')} and {csv}")
    return EXIT_OK


# --------------------------------------------------------------------------- check, data


def cmd_check(args: argparse.Namespace) -> int:
    from benchlab import testing

    registry = _registry()
    try:
        component = testing.resolve(registry, args.name, args.kind)
    except (KeyError, LookupError, ValueError) as exc:
        raise _UsageError(str(exc).strip("'\"")) from None
    results = testing.run_checks(component, device=args.device)
    counts = {"PASS": 0, "SKIP": 0, "FAIL": 0}
    for result in results:
        status = "PASS" if result.passed else ("SKIP" if result.skipped else "FAIL")
        counts[status] += 1
        line = f"{status}  {component.kind} {component.name}: {result.name}"
        print(line + (f" — {result.message}" if result.message and status != "PASS" else ""))
        if result.failed and result.traceback:
            print("".join(f"    {row}\n" for row in result.traceback.rstrip().splitlines()))
    failed = counts["FAIL"]
    print(f"{counts['PASS']} passed, {failed} failed, {counts['SKIP']} skipped")
    return EXIT_FAILED_JOBS if failed else EXIT_OK


def cmd_data(args: argparse.Namespace) -> int:
    from benchlab import data

    registry = _registry()
    root = data.data_root()
    if args.data_command == "fetch":
        names = registry.names("dataset")
        if args.name not in names:
            from benchlab.plugins import unknown_name_message

            raise _UsageError(unknown_name_message("dataset", args.name, names))
        try:
            files = data.fetch(registry.get("dataset", args.name).obj, root)
        except data.DataError as exc:
            _err(str(exc))
            return EXIT_FAILED_JOBS
        for f in files:
            print(f"{'ok' if f.verified else 'BAD'}  {f.path}")
        print(root)
        return EXIT_OK
    print(f"data root: {root}")
    for component in registry.components("dataset"):
        files = component.obj.files(root)
        ok = all(f.verified for f in files)
        state = "verified" if ok else ("missing" if not any(f.present for f in files)
                                       else "incomplete or corrupt")
        print(f"{component.name:16} {state}  ({sum(f.verified for f in files)}/{len(files)} "
              f"files)  [{component.provenance}]")
    return EXIT_OK


# --------------------------------------------------------------------------- main


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from benchlab import __version__

    parser = argparse.ArgumentParser(
        prog="benchlab",
        description="Benchmarks of models, attacks and explainers over many seeds, "
                    "declared in YAML suites.",
        epilog="Exit status: 0 ok, 1 some job failed, 2 invalid input, 130 interrupted, "
               "143 terminated (SIGTERM).")
    parser.add_argument("--version", action="version", version=f"benchlab {__version__}")
    debug_help = (f"print full tracebacks: of failed jobs (kept in DIR/jobs/ID.log), of "
                  f"failing checks and of errors (same as {DEBUG_ENV}=1)")
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plugins", help="list plugins, their components and load failures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    sweep_help = ("run a suite whose sweeps expand to more jobs than the limit "
                  "(benchlab.suite.schema.SWEEP_MAX_JOBS)")
    set_help = "override a suite key: dotted PATH (list items by index), VALUE as YAML"
    p = sub.add_parser("validate", help="check a suite without running it")
    p.add_argument("suite")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help=set_help)
    p.add_argument("--allow-large-sweep", action="store_true", help=sweep_help)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a suite")
    p.add_argument("suite", nargs="?", help="suite file (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help=set_help)
    p.add_argument("--allow-large-sweep", action="store_true", help=sweep_help)
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default results/<suite>/<UTC time>/)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when available (default); cpu forces the CPU")
    p.add_argument("--resume", metavar="DIR", help="finish an interrupted run in DIR")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: in this process (default); dask: on a Dask cluster")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --executor dask: a running cluster's scheduler "
                        "(tcp://host:8786); default: start a LocalCluster here")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="with --executor dask and no --scheduler: worker processes of the "
                        "LocalCluster, one thread each (default: one per core)")
    p.add_argument("--track", action="append", default=[], metavar="SINK",
                   help="also log the run to a result sink, e.g. mlflow (MLFLOW_TRACKING_URI, "
                        "else a local store in the run directory); repeatable")
    p.add_argument("--checkpoint-every", type=_checkpoint_every, default="epoch",
                   metavar="epoch|N|off",
                   help="when train jobs keep a checkpoint to continue from after an "
                        "interruption: at the end of every epoch (default), also every N "
                        "optimisation steps, or never")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="redraw tables and plots of a run from results.csv")
    p.add_argument("dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="the same metrics of two or more runs side by side")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run directories; the first is the baseline the others are "
                        "compared with")
    p.add_argument("--metric", action="append", default=[], metavar="PATTERN",
                   help="compare only metrics matching this glob (repeatable), e.g. "
                        "'test_acc' or 'cam_*'")
    p.add_argument("--out", metavar="DIR",
                   help="also write compare.md and compare.csv there (default: print only)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("check", help="run the conformance checks on a registered component")
    p.add_argument("name")
    p.add_argument("--kind", choices=["dataset", "model", "attack", "explainer", "procedure",
                                      "sink"])
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("data", help="fetch and list datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download and verify a dataset")
    fetch.add_argument("name")
    data_sub.add_parser("list", help="which datasets are present and verified")
    p.set_defaults(func=cmd_data)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after setup)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    from benchlab.outdir import OutDirError
    from benchlab.plugins import PluginError
    from benchlab.suite import SuiteError

    args = build_parser().parse_args(argv)
    # Progress notes from the library (dataset downloads, ...) go to stderr.
    # Details (a library's full error text) go to the run's log file, not to the screen.
    handler = _StderrHandler()
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("benchlab: %(message)s"))
    logger = logging.getLogger("benchlab")
    if not logger.handlers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with _sigterm_interrupts():
            status = args.func(args)
            sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at exit
        return status
    except BrokenPipeError:
        # The reader went away (`benchlab plugins | head`): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except SuiteError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except (_UsageError, PluginError, OutDirError) as exc:
        _err(str(exc))
        return EXIT_INVALID
    except KeyboardInterrupt as exc:
        if isinstance(exc, _Terminated):
            _err("terminated (SIGTERM)")
            return EXIT_TERMINATED
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an environment problem: one line unless debugging
        if _debug(args):
            raise
        _err(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAILED_JOBS


if __name__ == "__main__":
    sys.exit(main())
