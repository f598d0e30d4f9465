"""Champion / challenger routing: which requests the challenger answers, whether it can answer them at all, and how
windows scaled for the champion become the challenger's inputs.

- **Split** (``challenger_split`` p in [0, 1]): a request goes to the challenger when a hash of its key falls below p,
  so a key always goes to the same version while p stays: the key is the ticker for ``/predict/ticker`` and the
  client's ``X-Stocktrend-Key`` header for ``/predict`` (or for ``/predict/ticker`` with raw bars and no ticker);
  requests without a key are routed at random with probability p (not sticky).
- **Shadow**: the champion answers everything; the challenger gets a copy off the request path (``Shadow``).
- **Compatibility**: the challenger must answer the same question (label kind, classes, horizon, task) on the same
  tickers, and take the same windows: the same sequence length and the same input columns. Its scaler may differ (a
  retrain refits it): windows scaled for the champion are mapped back to raw feature values and scaled again for the
  challenger (``adapt_windows``), which is exact because both scalers are affine.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np

KEY_HEADER = "x-stocktrend-key"


def share_of(key: str | None) -> float:
    """A key's position in [0, 1): the same on every replica and every run."""
    if key is None:
        return random.random()
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2 ** 32


def routes_to_challenger(key: str | None, split: float) -> bool:
    return split > 0 and share_of(key) < split


def incompatibility(champion: dict[str, Any], challenger: dict[str, Any], routes: str = "all") -> str | None:
    """Why the challenger cannot answer the champion's requests (None: it can). Inputs as ``describe_inputs``.

    ``routes="ticker"``: only ``/predict/ticker`` goes to the challenger, where each model builds its own inputs
    from raw bars, so only the question (label, classes, horizon, task, tickers) must match; windows for ``/predict``
    are scaled for the champion and need the same sequence length and input columns."""
    diffs = []
    keys = (("label_kind", "label"), ("class_names", "classes"), ("horizon", "horizon"), ("task", "task"))
    for key, what in (*keys, *((("seq_len", "sequence length"),) if routes == "all" else ())):
        if champion[key] != challenger[key]:
            diffs.append(f"{what} {challenger[key]} vs the champion's {champion[key]}")
    if routes == "all" and sorted(champion["names"]) != sorted(challenger["names"]):
        only = sorted(set(challenger["names"]) - set(champion["names"]))[:4]
        missing = sorted(set(champion["names"]) - set(challenger["names"]))[:4]
        diffs.append(f"other input features (challenger adds {', '.join(only) or '-'}, lacks "
                     f"{', '.join(missing) or '-'})")
    if champion["tickers"] != challenger["tickers"]:
        diffs.append("other tickers")
    return "; ".join(diffs) if diffs else None


def adapt_windows(x: np.ndarray, source: dict[str, Any], target: dict[str, Any]) -> np.ndarray:
    """Windows scaled and ordered for ``source`` -> the same raw values scaled and ordered for ``target``."""
    x = np.asarray(x, dtype=np.float32)
    n_src, n_tgt = int(source["n_selected"]), int(target["n_selected"])
    src_pos = {n: i for i, n in enumerate(source["names"])}
    if source["names"] == target["names"] and np.array_equal(source["mean"], target["mean"]) and \
            np.array_equal(source["scale"], target["scale"]):
        return x
    raw = x[..., :n_src].astype(np.float64) * np.asarray(source["scale"]) + np.asarray(source["mean"])
    out = np.empty(x.shape[:-1] + (len(target["names"]),), dtype=np.float32)
    order = [src_pos[n] for n in target["names"][:n_tgt]]
    out[..., :n_tgt] = (raw[..., order] - np.asarray(target["mean"])) / np.asarray(target["scale"])
    for j, n in enumerate(target["names"][n_tgt:], start=n_tgt):  # ticker one-hots: moved, never scaled
        out[..., j] = x[..., src_pos[n]]
    return out
