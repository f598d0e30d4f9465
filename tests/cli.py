"""For tests that run the CLI as a user does: ``stocktrend ...`` in a subprocess on a fresh ``STOCKTREND_HOME``, on a
folder of CSV exports."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "stocktrend")
# The loop's panels (tests/loop/test_loop_cli.py) and the command that trains the champion of the session's
# planted_home (tests/conftest.py). Their tickers all copy the market 5 days later: the signal is the market's own,
# which a panel's default label (excess, against the day's universe mean) removes, so the raw direction is asked for.
LOOP_DAYS = 1100
LOOP_TRAIN = ["train", "--model", "lstm", "--preset", "tiny", "--epochs", "4", "--accumulate", "1", "--top-k", "8",
              "--sequence-length", "10", "--label", "binary"]
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


def clone_home(src: Path, dst: Path) -> Path:
    """A copy of a home as if it had been made at ``dst``: its files, with the absolute paths the MLflow store keeps
    (artefact locations) moved; refuses if any other file still names the original."""
    import shutil
    import sqlite3
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("logs", "locks"))
    with sqlite3.connect(dst / "mlflow.db") as db:
        for (table,) in db.execute("select name from sqlite_master where type='table'").fetchall():
            for _, col, typ, *_ in db.execute(f'pragma table_info("{table}")').fetchall():
                if any(t in typ.upper() for t in ("CHAR", "TEXT", "CLOB")):
                    db.execute(f'update "{table}" set "{col}" = replace("{col}", ?, ?) where instr("{col}", ?) > 0',
                               (str(src), str(dst), str(src)))
        assert not db.execute("select 1 from runs where instr(artifact_uri, ?) > 0", (str(src),)).fetchall()
    for p in dst.rglob("*"):  # text files naming it (MLmodel's artifact_path) are moved too; anything else refuses
        if p.is_file() and p.name != "mlflow.db" and p.stat().st_size < 2**24 and str(src).encode() in p.read_bytes():
            try:
                p.write_text(p.read_text(encoding="utf-8").replace(str(src), str(dst)), encoding="utf-8")
            except UnicodeDecodeError:
                raise AssertionError(f"a binary file of the copied home names the original: {p}") from None
    return dst


def checkpoint_of(home: Path, version: int, name: str = "stocktrend") -> Path:
    """The weights-only checkpoint a `stocktrend train` on ``home`` wrote for the registered ``name`` version."""
    import mlflow
    c = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return home / "models" / c.get_model_version(name, str(version)).run_id / "model.pt"
