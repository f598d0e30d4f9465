"""How Ray Train workers get the data when the user does not say (``--data-transport auto``, the default).

The in-memory path (``object-store``: the driver builds and prepares the whole panel, the workers read it from the
object store) and the streaming path (``stream``: features partitioned by ticker, each worker streams its share through
Ray Data) train at the same speed once running (bench/README.md "The whole market": 24,555 vs 22,984 windows/s at
300 tickers), but streaming pays a reader start of 12-18 s per fit and the in-memory driver holds the whole panel.
So ``auto`` keeps the in-memory path while its estimated peak fits in half the memory this machine has available,
and streams beyond that. The estimate is the measured line of the in-memory driver's peak resident memory
(``bench/stream_scale.py --in-memory``: 1.81 GB at 825,000 ticker-days and 4.50 GB at 2,750,000, 113 features): a
base plus bytes per feature value.
"""

from __future__ import annotations

from dataclasses import dataclass

from stocktrend.platform.data.sources import Universe

BASE_BYTES = 0.66e9  # the driver before any panel (Python, torch, Ray, MLflow)
BYTES_PER_VALUE = 12.4  # per ticker-day and feature: the float32 panel, its scaled copy, labels and window index
MEMORY_SHARE = 0.5  # of the available memory the in-memory path may plan to use
TRANSPORTS = ("auto", "object-store", "shared-path", "stream")


@dataclass(frozen=True)
class TransportChoice:
    transport: str
    reason: str
    estimate_bytes: float
    available_bytes: float


def feature_count(universe: Universe, feature_config) -> int:
    """Columns one ticker's features have (computed on the first ticker: milliseconds)."""
    from stocktrend.platform.data.features import build_features
    name, frame = next(iter(universe.tickers.items()))
    feats = build_features(frame, universe.market, universe.indicators, feature_config, name=name)
    return len([c for c in feats.columns if c != "close"])


def in_memory_estimate(ticker_days: int, n_features: int) -> float:
    return BASE_BYTES + ticker_days * n_features * BYTES_PER_VALUE


def available_memory() -> float:
    """Bytes this process may still use: the host's available memory (psutil), or less inside a container whose
    cgroup (v1 or v2) limits memory: the limit minus what the container uses, as Ray's own memory monitor reads it
    (``ray._private.utils.get_cgroup_mem_stats``; without Ray or a readable cgroup, the host's figure)."""
    import psutil
    host = float(psutil.virtual_memory().available)
    try:
        from ray._private.utils import get_cgroup_mem_stats
        stats = get_cgroup_mem_stats()
    except Exception:  # noqa: BLE001 - a private helper: any change there falls back to the host's figure
        stats = None
    if not stats:
        return host
    used, total = stats
    return max(0.0, min(host, float(total - used)))


def choose(universe: Universe, feature_config, available_bytes: float | None = None,
           finetune: bool = False, ticker_id: bool = False) -> TransportChoice:
    """``object-store`` while the in-memory estimate fits ``MEMORY_SHARE`` of the available memory, else ``stream``
    (a fine-tune and ``--ticker-id`` always take the in-memory path: the stream plan takes neither the base model's
    scaler nor the one-hot ticker columns yet). Available memory: ``available_memory``."""
    available = float(available_bytes if available_bytes is not None else available_memory())
    ticker_days = sum(len(f) for f in universe.tickers.values())
    n = len(universe.tickers)
    estimate = in_memory_estimate(ticker_days, feature_count(universe, feature_config) + (n if ticker_id else 0))
    gb = 1e9
    sizes = (f"{n:,} ticker{'s' if n != 1 else ''}, {ticker_days:,} ticker-days: the in-memory path needs about "
             f"{estimate / gb:.1f} GB, {available / gb:.1f} GB available")
    if finetune or ticker_id:
        why = "a fine-tune keeps the base model's inputs" if finetune else "--ticker-id is built"
        return TransportChoice("object-store", f"{why} in memory ({sizes})", estimate, available)
    if estimate <= MEMORY_SHARE * available:
        return TransportChoice("object-store", f"in memory ({sizes})", estimate, available)
    return TransportChoice("stream", f"streamed by ticker ({sizes}, more than half)", estimate, available)
