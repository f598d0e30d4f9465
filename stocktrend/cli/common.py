"""Shared pieces of the ``stocktrend`` command: the Typer apps, the root options, flag parsing, Ctrl-C handling."""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import contextmanager
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, tune and serve stock-trend models on Ray (not financial advice).")
data_app = typer.Typer(no_args_is_help=True, help="Build and inspect data sets.")
app.add_typer(data_app, name="data")
models_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry: versions and the production alias.")
app.add_typer(models_app, name="models")

STATE = {"debug": False, "verbose": False}


@app.callback()
def _root(ctx: typer.Context,
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's, Lightning's and MLflow's own output "
                                       "and warnings on the console (they always go to the command's log file)."),
          debug: bool = typer.Option(False, "--debug", help="Like --verbose, and show tracebacks."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on the console.")) -> None:
    """A quiet console by default: the platform's progress and results; everything else goes to
    $STOCKTREND_HOME/logs/<command>-<time>.log, which an error line names."""
    from stocktrend.platform import console
    STATE["debug"] = debug
    STATE["verbose"] = verbose or debug
    if ctx.invoked_subcommand and not ctx.resilient_parsing:
        console.setup(ctx.invoked_subcommand, verbose or debug)
    if debug:
        logging.getLogger().setLevel(logging.DEBUG)
    elif quiet:
        for h in logging.getLogger().handlers:
            if not isinstance(h, logging.FileHandler):
                h.setLevel(logging.WARNING)


def _split_list(value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _fractions(value: str) -> tuple[float, float, float]:
    parts = [float(p) for p in value.split(",")]
    if len(parts) != 3:
        raise typer.BadParameter("give three comma-separated fractions, e.g. 0.8,0.1,0.1")
    return parts[0], parts[1], parts[2]


@contextmanager
def _interruptible(command: str):
    """One Ctrl-C ends the command: say what was kept, shut down the Ray instance this process started (no Ray
    process of the run is left), exit 130. Errors shut it down too, so nothing is left behind either way."""
    import signal

    from stocktrend.platform import console
    from stocktrend.platform.training.distributed import shutdown_ray
    from stocktrend.tune.search import SearchInterrupted

    def stop(signum, frame):  # SIGTERM (a scheduler, `kill`) stops the command as Ctrl-C does
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except SearchInterrupted as exc:
        typer.echo(f"\ninterrupted: {exc.summary}", err=True)
        _exit_now(130, shutdown_ray)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: {command} stopped by Ctrl-C{console.where()}", err=True)
        _exit_now(130, shutdown_ray)
    except BaseException:
        shutdown_ray()
        raise


def _exit_now(code: int, shutdown) -> None:
    """Shut Ray down and leave at once: a helper thread may still be blocked in a Ray call, and a normal interpreter
    exit would wait for it."""
    import os
    try:
        shutdown()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _finish() -> None:
    from stocktrend.platform.training.distributed import shutdown_ray
    shutdown_ray()

