"""For tests that run the CLI as a user does: ``stocktrend ...`` in a subprocess on a fresh ``STOCKTREND_HOME``, on a
folder of CSV exports."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "stocktrend")
# Settings of this test process that must not reach a command meant to start from scratch.
NOT_INHERITED = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "STOCKTREND_ARTIFACTS")


def planted_csv_folder(folder: Path, seed: int, tickers: int = 2, days: int = 700) -> Path:
    """``folder/data``: one CSV per ticker of a planted-signal universe and its market context under ``market/``, as a
    user's exports look; returns the data folder."""
    from stocktrend.platform.data.synthetic import planted_signal_universe
    data = folder / "data"
    (data / "market").mkdir(parents=True, exist_ok=True)
    u = planted_signal_universe(days, seed=seed, n_tickers=tickers)
    for name, frame in u.tickers.items():
        frame.to_csv(data / f"{name}.csv")
    for name, frame in u.market.items():
        frame.to_csv(data / "market" / f"{name}.csv")
    return data


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment with ``STOCKTREND_HOME=home`` and ``extra``, without NOT_INHERITED."""
    env = {**os.environ, "STOCKTREND_HOME": str(home), **extra}
    for key in NOT_INHERITED:
        if key not in extra:
            env.pop(key, None)
    return env


def cli_ok(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``stocktrend ARGS`` from the repository root; asserts it exits 0 (its output tails in the message)."""
    r = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r
