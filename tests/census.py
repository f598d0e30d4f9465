"""A socket census for issue 37: every listening socket of a command's processes (the command, the Ray instance it
starts, HAProxy), polled while the command runs; each one beyond loopback is probed once, at once, with an
unauthenticated HTTP GET from this machine's own non-loopback address. A socket passes when it is on loopback, or
refuses the request (HTTP 401/403), or does not speak HTTP/1.1 at all (Ray's gRPC services)."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil


def outside_address() -> str:
    """An address of this machine other than loopback (what a neighbour on the network would connect to)."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return a.address
    return "127.0.0.1"  # no network at all: the probe still tells HTTP from not-HTTP


def loopback(ip: str) -> bool:
    ip = ip.removeprefix("::ffff:")
    return ipaddress.ip_address(ip).is_loopback


def probe(ip: str, port: int) -> str:
    host = outside_address() if ip in ("0.0.0.0", "::", "") else ip.removeprefix("::ffff:")
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    try:
        r = httpx.get(url, timeout=3)
        return f"HTTP {r.status_code}"
    except (httpx.RemoteProtocolError, httpx.ReadTimeout, httpx.ReadError):
        return "not HTTP"
    except httpx.ConnectError:
        return "refused"
    except httpx.HTTPError as e:
        return f"error {type(e).__name__}"


@dataclass
class Listener:
    ip: str
    port: int
    pid: int
    name: str
    verdict: str  # "loopback", "HTTP 401", "not HTTP", "refused", "HTTP 200", ...

    @property
    def ok(self) -> bool:
        return self.verdict in ("loopback", "HTTP 401", "HTTP 403", "not HTTP", "refused")


class Census:
    """``with Census(home) as c: <run the command>``; then ``c.listeners``, ``c.exposed()``, ``print(c.table())``.

    The command's processes are those whose environment has ``STOCKTREND_HOME=home`` (every process Ray starts
    inherits it) and their descendants."""

    def __init__(self, home: Path, every_s: float = 0.3):
        self.home, self.every_s = str(home), every_s
        self.listeners: dict[tuple[str, int], Listener] = {}
        self._ours: dict[tuple[int, float], bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Census":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _is_ours(self, pid: int) -> bool:
        try:
            p = psutil.Process(pid)
            key = (pid, p.create_time())
            if key not in self._ours:
                mine = p.environ().get("STOCKTREND_HOME") == self.home
                if not mine:  # HAProxy and other children started with their own environment
                    mine = any(a.environ().get("STOCKTREND_HOME") == self.home for a in p.parents()[:3])
                self._ours[key] = mine
            return self._ours[key]
        except psutil.Error:
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conns = psutil.net_connections(kind="inet")
            except psutil.Error:
                conns = []
            for c in conns:
                if c.status != psutil.CONN_LISTEN or not c.pid or (c.laddr.ip, c.laddr.port) in self.listeners:
                    continue
                if not self._is_ours(c.pid):
                    continue
                try:
                    name = psutil.Process(c.pid).name()
                except psutil.Error:
                    name = "?"
                verdict = "loopback" if loopback(c.laddr.ip) else probe(c.laddr.ip, c.laddr.port)
                self.listeners[(c.laddr.ip, c.laddr.port)] = Listener(c.laddr.ip, c.laddr.port, c.pid, name, verdict)
            time.sleep(self.every_s)

    def exposed(self) -> list[Listener]:
        return [x for x in self.listeners.values() if not x.ok]

    def table(self) -> str:
        rows = sorted(self.listeners.values(), key=lambda x: (x.verdict != "loopback", x.ip, x.port))
        return "\n".join(f"{x.ip:>18}:{x.port:<6} {x.verdict:<10} {x.name} (PID {x.pid})" for x in rows)


def haproxy_started_since(t0: float, home: Path) -> list[int]:
    """HAProxy processes created at or after ``t0`` (time.time()) for a command on ``home`` that still run: after the
    command ended, what it left behind. Its HAProxy inherits the command's environment (through the Ray instance it
    started), so another test process's endpoints are not counted."""
    time.sleep(1)
    return [p.pid for p in psutil.process_iter(["name", "create_time"])
            if p.info["name"] == "haproxy" and (p.info["create_time"] or 0) >= t0 - 1
            and _home_of(p) in (str(home), "unreadable")]


def _home_of(p: psutil.Process) -> str | None:
    try:
        return p.environ().get("STOCKTREND_HOME")
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # an environment this user cannot read: counted, as if it were the command's
        return "unreadable"
