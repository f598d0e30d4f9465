"""Free TCP ports that stay free while Ray starts.

Ray binds many ports as it starts (GCS, raylet, object manager, metrics agent, each worker's gRPC server): most by
asking the kernel for any free port, which the kernel takes from its ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 on Linux, 49152-65535 on macOS and Windows), its workers from
10002-19999 (``--min/max-worker-port``), and with Serve's direct ingress (the HAProxy mode) each replica binds an HTTP
port from 30000 and a gRPC port from 40000. A port found free by binding port 0 is in the ephemeral range, so Ray can
take it before the server meant for it binds (seen here: HAProxy's "cannot bind socket (Address already in use)" on an
endpoint port chosen that way). The ports picked here come from 20000-29999 (and below the ephemeral range): outside
all of those and Ray's default ports (6379, 8265, 10001, 52365). A process is never handed the same port twice."""

import random
import socket

LOW, HIGH = 20000, 29999  # above Ray's worker ports (10002-19999), below Serve's replica ports (30000-31000)
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(v) for v in f.read().split())
        return lo, hi
    except (OSError, ValueError):  # not Linux: the IANA range macOS and Windows use
        return 49152, 65535


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", tries: int = 500) -> int:
    """A port nothing listens on (or is connected from) now, in 20000-29999 and below the ephemeral range: nothing that
    binds port 0 (Ray starting, a client connecting) can take it before the caller's server does. Not one this process
    was handed before (two servers asking in a row get two ports)."""
    high = min(ephemeral_range()[0] - 1, HIGH)
    if high - LOW >= 100:
        for port in random.sample(range(LOW, high + 1), min(tries, high + 1 - LOW)):
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    with socket.socket() as s:  # an unusual kernel setting (ephemeral ports from 1024, say): any free port
        s.bind((host, 0))
        return s.getsockname()[1]
