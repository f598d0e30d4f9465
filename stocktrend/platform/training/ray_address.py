"""Which Ray instance a command uses, decided before any work: a private local instance unless an address is given
(``--address``, ``RAY_ADDRESS``), and a bounded, clearly reported connection when one is.

Ray's own ``ray.init()`` with no address first joins the cluster recorded in ``<ray temp dir>/ray_current_cluster`` by
the last ``ray start``; when that cluster died without ``ray stop`` (a crash, the OOM killer, a closed laptop lid) it
retries without bound, printing raw GCS warnings. Here no address means ``address="local"`` (a fresh private
instance), ``auto`` is the explicit way to join the running local cluster, and a given address is probed with a TCP
connection (a few seconds) and joined within ``$STOCKTREND_RAY_CONNECT_TIMEOUT_S`` (10 s), or the command stops with
one line naming the address and what to do. Nothing here imports torch: the CLI checks the address first.
"""

from __future__ import annotations

import os
from typing import Any

CONNECT_TIMEOUT_ENV = "STOCKTREND_RAY_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 10.0


class RayConnectionError(RuntimeError):
    """The Ray cluster named by --address / RAY_ADDRESS cannot be reached; the message says what to do."""


def connect_timeout_s() -> float:
    """Seconds a connection to an existing cluster may take ($STOCKTREND_RAY_CONNECT_TIMEOUT_S, default 10)."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_CONNECT_TIMEOUT_S
    except ValueError:
        raise RayConnectionError(f"{CONNECT_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


def _hint(address: str, source: str) -> str:
    unset = " or unset RAY_ADDRESS" if source == "RAY_ADDRESS" else ""
    return (f"check it with `ray status --address {address}`, start one with `ray start --head`, or leave the "
            f"address out{unset} to run on a private local instance")


def resolve_address(address: str | None) -> tuple[str | None, str]:
    """The cluster to join and where that came from; (None, ...) = start a private local instance.

    ``--address`` wins over ``RAY_ADDRESS``. Neither: a private local instance (Ray's ``address="local"``), whatever
    ``ray_current_cluster`` in Ray's temp dir says: a cluster left there by a crash must never hang a command.
    ``auto`` joins the local cluster recorded by the last ``ray start`` on this machine, if it is alive."""
    source = "--address"
    if not address:
        address, source = os.environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS"
    if address in (None, "local"):
        return None, "local"
    if address == "auto":
        from ray._private.utils import read_ray_address
        found = read_ray_address()
        if not found:
            raise RayConnectionError("address 'auto': no local Ray cluster is recorded on this machine (`ray start "
                                     "--head` starts one); leave the address out to run on a private local instance")
        return found, f"{source} auto (the last `ray start` on this machine)"
    if address.startswith(("http://", "https://")):
        raise RayConnectionError(
            f"{source} {address!r} is a dashboard / job API address (what `ray job submit` takes); commands connect "
            f"to the cluster's GCS address (host:6379) or a Ray Client address (ray://host:10001)")
    return address, source


def _probe(address: str, source: str, timeout: float) -> None:
    """A TCP connection to the address within ``timeout``: a dead cluster is one clear error in seconds, not Ray's
    unbounded retries (and their warnings) on the console."""
    import socket
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayConnectionError(f"{source} {address!r} is not a Ray address (use host:port, ray://host:port, auto "
                                 f"or local)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except OSError as exc:
        why = (f"no answer within {timeout:g} s" if isinstance(exc, socket.timeout) else
               (exc.strerror or type(exc).__name__).lower())
        raise RayConnectionError(f"no Ray cluster answers at {address} ({source}): {why}; "
                                 f"{_hint(address, source)}") from None


def check_address(address: str | None) -> str | None:
    """Before any work: the cluster a command will join answers (a RayConnectionError naming it otherwise), or None
    when the command will start a private local instance. Cheap: no Ray import beyond reading the address file."""
    target, source = resolve_address(address)
    if target is not None:
        _probe(target, source, min(connect_timeout_s(), 5.0))
    return target


def _init_bounded(address: str, source: str, timeout: float, kw: dict[str, Any]) -> None:
    """``ray.init(address=...)`` in a helper thread, waited for at most ``timeout`` seconds."""
    import threading

    import ray
    box: dict[str, BaseException] = {}

    def target():
        try:
            ray.init(address=address, **kw)
        except BaseException as exc:  # re-raised below, in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="stocktrend-ray-connect", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise RayConnectionError(f"connecting to the Ray cluster at {address} ({source}) took more than {timeout:g} s "
                                 f"(raise {CONNECT_TIMEOUT_ENV} for a slow network); {_hint(address, source)}")
    if "error" in box:
        err = box["error"]
        line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise RayConnectionError(f"cannot join the Ray cluster at {address} ({source}): {line}") from None
