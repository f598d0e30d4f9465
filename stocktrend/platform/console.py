"""The console of long commands: the platform's own progress on the terminal, everything else in a log file.

``setup(command, verbose)`` opens ``$STOCKTREND_HOME/logs/<command>-<time>.log`` and sends every log record there
(Ray's driver-side loggers, Tune, Lightning, MLflow, Python warnings). The terminal gets the platform's INFO lines and
other libraries' errors only; ``--verbose`` puts everything back on the terminal as before.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

STATE: dict[str, object] = {"log_path": None, "verbose": True}


class _PlatformOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("stocktrend", "__main__")):
            return True
        # Ray and Tune log a trial's traceback at ERROR: it is in the log file and in the trial's error.txt,
        # and the platform prints one line naming both.
        return record.levelno >= logging.ERROR and not record.name.startswith("ray")


def setup(command: str, verbose: bool = False) -> Path:
    from stocktrend.platform.data.cache import default_home
    logs = default_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    STATE.update(log_path=path, verbose=verbose)
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


LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic")


def reroute() -> None:
    """Ray (at import and again in ray.init), MLflow and Optuna attach their own console handlers and stop
    propagation; send their records through ours instead (file always, console by the filter). Called again after
    ray.init and before a search starts."""
    if STATE["log_path"] is None:
        return
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in LIBRARY_LOGGERS]
    for name in {*LIBRARY_LOGGERS, *names}:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def log_path() -> Path | None:
    return STATE["log_path"]  # type: ignore[return-value]


def where() -> str:
    p = log_path()
    return f" (log: {p})" if p else ""
