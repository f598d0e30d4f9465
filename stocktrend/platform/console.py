"""The console of long commands: the platform's own progress on the terminal, everything else in a log file.

``setup(command, verbose)`` opens ``$STOCKTREND_HOME/logs/<command>-<time>.log`` and sends every log record there
(Ray's driver-side loggers, Tune, Lightning, MLflow, Python warnings). The terminal gets the platform's INFO lines and
other libraries' errors only; ``--verbose`` puts everything back on the terminal as before.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

STATE: dict[str, object] = {"log_path": None, "verbose": True}


# Per-ticker notes of the data layer (warm-up rows dropped, rows outside the market dates, features a close-only
# series lacks): one line per ticker is noise on a 500-ticker console; they stay in the log file. So does Ray's whole
# message (a remote traceback) behind a one-line error about an endpoint that could not start.
FILE_ONLY = ("stocktrend.platform.data.features", "stocktrend.serve.start")


class _PlatformOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(FILE_ONLY) and record.levelno < logging.WARNING:
            return False
        if record.name.startswith(("stocktrend", "__main__")):
            return True
        # Ray and Tune log a trial's traceback at ERROR: it is in the log file and in the trial's error.txt,
        # and the platform prints one line naming both.
        return record.levelno >= logging.ERROR and not record.name.startswith("ray")


def setup(command: str, verbose: bool = False) -> Path:
    """Open the command's log file and route every library's output there (the console keeps the platform's lines
    and other libraries' errors). Called once per command; calling it again (a command with its own --verbose)
    switches the console's verbosity and keeps the same file."""
    from stocktrend.platform.data.cache import default_home
    path = STATE["log_path"]
    if path is None or STATE.get("command") != command:
        logs = default_home() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    STATE.update(log_path=path, verbose=verbose, command=command)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(fmt)
    file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        console.addFilter(_PlatformOnly())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    reroute()
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        logging.captureWarnings(True)  # library deprecation warnings go to the file, not the terminal
        warnings.simplefilter("default")
    return path


LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic", "lightning", "pytorch_lightning")


def reroute() -> None:
    """Ray (at import and again in ray.init), MLflow, Optuna and Lightning attach their own console handlers when
    imported and stop propagation; send their records through ours instead (file always, console by the filter).
    Called after each of them may have been imported: ray.init, the registry client, the trainer, a search."""
    if STATE["log_path"] is None:
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in LIBRARY_LOGGERS]
    for name in {*LIBRARY_LOGGERS, *names}:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if not STATE["verbose"]:
        _route_ray_driver_prints()


def _route_ray_driver_prints() -> None:
    """Ray's driver prints messages pushed by the raylet (task retries at a normal Serve shutdown, worker errors) and,
    with log_to_driver, worker output, straight to stdout/stderr through ``ray._private.worker.print_to_stdstream``;
    there is no public switch for them. Unless --verbose, they become log records of ``ray.driver`` (the log file has
    them; the console shows them only at ERROR, which these are not)."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:
        return
    if getattr(ray_worker.print_to_stdstream, "_stocktrend", False):
        return
    driver_log = logging.getLogger("ray.driver")

    def to_log(data, ignore_prefix=False):
        who = data.get("actor_name") or data.get("task_name") or ""
        for line in data.get("lines", []):
            driver_log.info("(%s pid=%s) %s", who, data.get("pid"), line)
    to_log._stocktrend = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_log


def log_path() -> Path | None:
    return STATE["log_path"]  # type: ignore[return-value]


def where() -> str:
    p = log_path()
    return f" (log: {p})" if p else ""
