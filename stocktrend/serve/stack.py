"""A local Prometheus + Alertmanager beside ``stocktrend serve`` (``stocktrend monitoring``), and for the tests.

Prometheus scrapes every Ray node listed in Ray's service-discovery file (``/tmp/ray/prom_metrics_service_discovery
.json`` on the head: the metrics ports of Ray and of the endpoint's replicas), evaluates ``deploy/prometheus/
alerts.yml`` and sends what fires to Alertmanager, which delivers it to a webhook (or holds it, with no webhook).
With ``textfile_dir`` it also scrapes the realised-performance series ``stocktrend monitor`` writes there
(``stocktrend.loop.textfile``).
Both bind 127.0.0.1 and keep their data under ``$STOCKTREND_HOME/monitoring/``; Alertmanager's cluster (gossip) port,
which would listen on every interface, is off. The binaries are Debian's packages unpacked by
``deploy/prometheus/get-prometheus.sh`` (or any on PATH, or ``STOCKTREND_PROMETHEUS_BIN``: a folder holding them).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# The alert rules ship inside the package (package data: a pip install without the repository has them too);
# deploy/prometheus/alerts.yml is a link to this file for Kubernetes and promtool users.
RULES = Path(__file__).resolve().parent / "assets" / "alerts.yml"
RAY_SD_FILE = Path("/tmp/ray/prom_metrics_service_discovery.json")
NAMES = {"prometheus": ("prometheus",), "alertmanager": ("prometheus-alertmanager", "alertmanager")}


class StackError(ValueError):
    """A binary is missing, a port is taken, a server did not come up: one line naming it."""


def find_binaries() -> dict[str, Path]:
    """prometheus and alertmanager: ``$STOCKTREND_PROMETHEUS_BIN``, this checkout's ``.tools/prometheus``, PATH."""
    folders = [os.environ.get("STOCKTREND_PROMETHEUS_BIN", ""), str(REPO / ".tools" / "prometheus" / "usr" / "bin")]
    found: dict[str, Path] = {}
    for role, names in NAMES.items():
        for name in names:
            hit = next((Path(d) / name for d in folders if d and (Path(d) / name).is_file()), None) or \
                (Path(shutil.which(name)) if shutil.which(name) else None)
            if hit is not None and os.access(hit, os.X_OK):
                found[role] = hit
                break
    missing = [r for r in NAMES if r not in found]
    if missing:
        raise StackError(f"{' and '.join(missing)} not found: run `bash deploy/prometheus/get-prometheus.sh` (Debian's "
                         f"packages, unpacked into .tools/prometheus), or set STOCKTREND_PROMETHEUS_BIN to a folder "
                         f"holding prometheus and prometheus-alertmanager")
    tmpl = Path("/usr/share/prometheus/alertmanager")
    if found["alertmanager"].name == "prometheus-alertmanager" and not all(
            (tmpl / t).is_file() for t in ("default.tmpl", "email.tmpl")):
        raise StackError(f"Debian's Alertmanager needs its templates in {tmpl}: run `bash deploy/prometheus/"
                         f"get-prometheus.sh` as root (it copies them there)")
    return found


def fast_rules(source: Path, out: Path, hold: str = "2s") -> Path:
    """``source``'s rules with every ``for:`` set to ``hold``: a test rule file generated from the real one (the same
    expressions, labels and annotations), so that an alert goes pending and firing within seconds."""
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = hold
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def serve_textfiles(folder: Path, port: int = 0):
    """An HTTP server on 127.0.0.1 whose ``/metrics`` is every ``*.prom`` file of ``folder`` (the realised series
    ``stocktrend monitor`` writes), for Prometheus to scrape: node_exporter's textfile collector does the same, this
    avoids a third daemon for one folder. Returns the started server (``.server_port``, ``.shutdown()``)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = "".join(p.read_text(errors="replace") for p in sorted(Path(folder).glob("*.prom"))
                           if p.is_file()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="stocktrend-textfiles", daemon=True).start()
    return server


@dataclass
class Stack:
    prometheus_url: str
    alertmanager_url: str
    folder: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    textfiles: object | None = None

    reaped: list[str] = field(default_factory=list)

    def stop(self, timeout_s: float = 15.0) -> None:
        for name in ("alertmanager.pid", "prometheus.pid"):
            (self.folder / name).unlink(missing_ok=True)
        if self.textfiles is not None:
            self.textfiles.shutdown()
            self.textfiles.server_close()
            self.textfiles = None
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _reap(folder: Path) -> list[str]:
    """A ``monitoring up`` killed with SIGKILL leaves its servers running: end the ones its PID files name whose
    command line still points at this folder (never by name alone); one line per server ended."""
    import psutil
    lines = []
    for pid_file in sorted(folder.glob("*.pid")):
        try:
            pid, owner = (int(x) for x in pid_file.read_text().split())
            if owner != os.getpid() and psutil.pid_exists(owner):
                continue  # its command still runs: its own business (a second `up` then finds the ports taken)
            proc = psutil.Process(pid)
            if str(folder) in " ".join(proc.cmdline()):
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except psutil.TimeoutExpired:
                    proc.kill()
                lines.append(f"ended {pid_file.stem} (PID {proc.pid}) left running by a stopped `stocktrend "
                             f"monitoring up`")
        except (ValueError, OSError, psutil.Error):
            pass
        pid_file.unlink(missing_ok=True)
    return lines


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, what: str, timeout_s: float) -> None:
    import httpx
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-600:] if log.is_file() else ""
            taken = re.search(r"address already in use", tail, re.I)
            raise StackError(f"{what} exited at start (code {proc.returncode})" +
                             (": its port is in use (choose another port)" if taken else f"; its log {log} ends: "
                              f"{tail.strip().splitlines()[-1] if tail.strip() else '(empty)'}"))
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StackError(f"{what} did not answer {url} within {timeout_s:g} s (log: {log})")


def start(home: Path, prometheus_port: int = 9090, alertmanager_port: int = 9093, webhook: str | None = None,
          rules: Path = RULES, sd_file: Path = RAY_SD_FILE, scrape_interval: str = "15s",
          evaluation_interval: str = "15s", group_wait: str = "30s", timeout_s: float = 60.0,
          textfile_dir: Path | None = None) -> Stack:
    """Start Alertmanager then Prometheus on 127.0.0.1; returns when both answer their readiness endpoints."""
    bins = find_binaries()
    folder = Path(home) / "monitoring"
    reaped = _reap(folder) if folder.is_dir() else []
    import socket
    for port, what, flag in ((prometheus_port, "Prometheus", "--prometheus-port"),
                             (alertmanager_port, "Alertmanager", "--alertmanager-port")):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise StackError(f"port {port} on 127.0.0.1 ({what}) is in use (another monitoring stack?): choose "
                                 f"another with {flag}") from None
    (folder / "prometheus-data").mkdir(parents=True, exist_ok=True)
    (folder / "alertmanager-data").mkdir(parents=True, exist_ok=True)
    receiver = {"name": "webhook", **({"webhook_configs": [{"url": webhook, "send_resolved": True}]} if webhook
                                      else {})}
    (folder / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "webhook", "group_by": ["alertname", "application", "model", "role"],
                  "group_wait": group_wait, "group_interval": group_wait, "repeat_interval": "4h"},
        "receivers": [receiver]}, sort_keys=False))
    am_url, prom_url = f"http://127.0.0.1:{alertmanager_port}", f"http://127.0.0.1:{prometheus_port}"
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(Path(rules).resolve())],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [{"job_name": "ray", "file_sd_configs": [{"files": [str(sd_file)],
                                                                     "refresh_interval": "5s"}]}]},
        sort_keys=False))
    textfiles = None
    if textfile_dir is not None:  # the realised series of `stocktrend monitor` (stocktrend.loop.textfile)
        Path(textfile_dir).mkdir(parents=True, exist_ok=True)
        textfiles = serve_textfiles(Path(textfile_dir))
        scrape = yaml.safe_load((folder / "prometheus.yml").read_text())
        scrape["scrape_configs"].append({"job_name": "stocktrend-batch", "honor_labels": True, "static_configs": [
            {"targets": [f"127.0.0.1:{textfiles.server_port}"]}]})
        (folder / "prometheus.yml").write_text(yaml.safe_dump(scrape, sort_keys=False))
    stack = Stack(prom_url, am_url, folder, textfiles=textfiles, reaped=reaped)
    try:
        am_log = folder / "alertmanager.log"
        with open(am_log, "w") as out:
            stack.procs.append(subprocess.Popen(
                [str(bins["alertmanager"]), f"--config.file={folder / 'alertmanager.yml'}",
                 f"--storage.path={folder / 'alertmanager-data'}",
                 f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address="],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        (folder / "alertmanager.pid").write_text(f"{stack.procs[-1].pid} {os.getpid()}")
        _wait_ready(f"{am_url}/-/ready", stack.procs[-1], am_log, "Alertmanager", timeout_s)
        prom_log = folder / "prometheus.log"
        with open(prom_log, "w") as out:
            stack.procs.append(subprocess.Popen(
                [str(bins["prometheus"]), f"--config.file={folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={folder / 'prometheus-data'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        (folder / "prometheus.pid").write_text(f"{stack.procs[-1].pid} {os.getpid()}")
        _wait_ready(f"{prom_url}/-/ready", stack.procs[-1], prom_log, "Prometheus", timeout_s)
    except BaseException:
        stack.stop()
        raise
    return stack
