"""Free TCP ports that stay free while Ray starts.

Ray binds many ports as it starts (GCS, raylet, object manager, metrics agent, each worker's gRPC server): most by asking
the kernel for any free port, which the kernel takes from its ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``,
32768-60999 on Linux, 49152-65535 on macOS and Windows), its workers from 10002-19999 (``--min/max-worker-port``). A
port found free by binding port 0 is in the ephemeral range, so Ray can take it before the server meant for it binds
(seen here: HAProxy's "cannot bind socket (Address already in use)" on an endpoint port chosen that way). The ports
picked here come from 20000 up to the ephemeral range: outside Ray's worker range, its default ports (6379, 8265,
10001, 52365) and anything the kernel hands out for port 0."""

import random
import socket

LOW = 20000  # above Ray's worker ports (10002-19999)


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
    """A port nothing listens on (or is connected from) now, below the ephemeral range: nothing that binds port 0
    (Ray starting, a client connecting) can take it before the caller's server does."""
    high = min(ephemeral_range()[0] - 1, 65535)
    if high - LOW >= 100:
        for port in random.sample(range(LOW, high + 1), min(tries, high + 1 - LOW)):
            if _bindable(host, port):
                return port
    with socket.socket() as s:  # an unusual kernel setting (ephemeral ports from 1024, say): any free port
        s.bind((host, 0))
        return s.getsockname()[1]
