"""Issue 29: the peer comparisons run end to end (their --quick variants: the platform's search against a plain
Optuna study, the endpoint against plain FastAPI + ONNX Runtime under uvicorn). Each peer's virtual environment is
created under bench/peers/.venvs (CPU torch first) by the README's setup step (`--quick --setup`, so CI counts it as
install time), or by the script on first use. The figures are not asserted: the
full runs, by hand, are what bench/README.md and README report."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, timeout: int) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("STOCKTREND_HOME", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "peers" / script), "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


def _row(out: str, label: str) -> list[str]:
    rows = [ln for ln in out.splitlines() if ln.startswith(label)]
    assert rows, f"no row {label!r} in:\n{out[-3000:]}"
    return rows[-1][len(label):].split()


@pytest.mark.slow
def test_search_against_plain_optuna_quick():
    out = _run("search.py", timeout=1200)
    for label in ("(a) stocktrend tune", "(b) plain Optuna"):
        cells = _row(out, label)
        assert cells[0] == "med", cells
        wall, trials, val = float(cells[1]), int(cells[3]), float(cells[7])
        assert wall > 0 and trials == 4 and 0 < val < 2, cells
    assert re.search(r"versions: optuna venv .*'optuna-integration'", out), out[-2000:]


@pytest.mark.slow
def test_serving_against_plain_uvicorn_quick():
    out = _run("serving.py", timeout=900)
    m = re.search(r"(\d+) server\(s\), 0 failed; 0 error\(s\)", out)
    assert m and int(m.group(1)) >= 2, out[-3000:]
    for label in ("stocktrend serve, 1 replica", "FastAPI + uvicorn, 1 worker"):
        assert re.search(rf"\[1/1\] {re.escape(label)} +up in .*c=1 p50 .* ms .*c=32 .* req/s", out), out[-3000:]
