"""A non-editable install (a wheel, no repository beside it) carries what the commands read at run time: the alert
rules of `stocktrend monitoring up`."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_install_has_the_alert_rules(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels)], check=True, timeout=300, capture_output=True)
    wheel = next(wheels.glob("stocktrend-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), "-q", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    out = subprocess.run([sys.executable, "-c", "import stocktrend.serve.stack as s; print(s.RULES); "
                          "print(s.RULES.read_text() == open(s.RULES).read())"],
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    path = Path(out.stdout.splitlines()[0])
    assert path.is_relative_to(target) and path.read_text() == (ROOT / "deploy/prometheus/alerts.yml").read_text()
