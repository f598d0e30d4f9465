"""Peer tools run in their own virtual environments under bench/peers/.venvs/<name> (never in the platform's): this
creates one on first use, CPU torch first (a looser torch requirement would pull several GB of CUDA wheels), and
runs a script in it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"
TORCH = "torch==2.13.0"


def ensure(name: str, packages: list[list[str]], with_torch: bool = True, timeout: int = 1800) -> Path:
    """The venv's python, created and filled on first use: ``packages`` is a list of pip argument lists, installed in
    order (e.g. ``[["--no-deps", "pyqlib==0.9.7"], ["lightgbm", ...]]``)."""
    root = VENVS / name
    python = root / "bin" / "python"
    marker = root / ".complete"
    if marker.is_file():
        return python
    t0 = time.perf_counter()
    print(f"[{name}] creating {root} (first run only)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True, timeout=300)
    steps = ([[TORCH]] if with_torch else []) + packages
    for args in steps:
        print(f"[{name}] pip install {' '.join(args)}", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True,
                       timeout=timeout)
    check = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                           capture_output=True, text=True)
    if with_torch and not check.stdout.startswith("2.13.0"):
        raise RuntimeError(f"[{name}] torch {check.stdout.strip()} was installed instead of {TORCH}")
    marker.write_text(f"{time.perf_counter() - t0:.0f} s\n")
    print(f"[{name}] ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return python


def versions(python: Path, names: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; out={}\n"
            f"for n in {names!r}:\n"
            "    try: out[n]=m.version(n)\n"
            "    except Exception: out[n]='-'\n"
            "print(json.dumps(out))")
    import json
    r = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout) if r.returncode == 0 else {}
