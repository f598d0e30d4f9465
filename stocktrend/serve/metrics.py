"""The endpoint's own metrics, through Ray's metrics system so that they add up across replicas and nodes.

Ray Serve already counts requests, errors and latency per application, route and status code (``ray_serve_*``). On
top of those each replica reports what only the platform knows, tagged with the model, its version, the inference
backend and the replica's role (champion or challenger):
- predictions by label, confidence, windows per model call, the served version (1 per replica);
- requests, errors and latency per answering version and role (``route`` ticker / windows), so a challenger's error
  rate and latency compare with the champion's;
- drift over the replica's rolling window of served rows (``stocktrend.platform.evaluation.drift``): PSI per model
  input and its maximum, the class-mix shift against the validation segment (the largest absolute shift, in
  percentage points), the mean confidence; set once the window holds ``MIN_DRIFT_ROWS`` rows (or is full);
- routing (champion ingress only): the configured challenger share, shadow calls dropped, shadow agreement.
They are ``ray.serve.metrics`` objects (Ray adds application, deployment and replica tags), exported with a ``ray_``
prefix by every node's metrics agent (docs/monitoring.md; ``deploy/grafana/stocktrend.json`` plots them).

Off the request path: a request only appends to plain Python lists and counters (microseconds); a background task of
the replica hands the accumulated values to Ray every ``FLUSH_S`` seconds and computes the drift gauges then. Ray's
own exporter runs on its own schedule after that (10 s by default), so a scrape sees a prediction within ~15 s.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Callable, Iterable

import numpy as np

log = logging.getLogger("stocktrend.serve")

FLUSH_S = 2.0
CONFIDENCE_BUCKETS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ABS_RETURN_BUCKETS = [0.0025, 0.005, 0.01, 0.02, 0.05, 0.1]  # Ray's histograms take positive bounds only
LATENCY_BUCKETS_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 1000]
PSI_TOP = 10  # per-feature PSI gauges exported for the largest ones only (bounded label cardinality)
# Fewer served rows than this (or than the whole window, if `drift_window` is smaller) and the drift gauges stay unset:
# PSI over ten deciles of a handful of rows is noise (8 copies of one window score PSI ~1.6 and would fire the alert).
MIN_DRIFT_ROWS = 200


class ServeMetrics:
    """Accumulates on the request path, flushes to ``ray.serve.metrics`` from ``run()``."""

    def __init__(self, role: str = "champion") -> None:
        self.role = role
        self._labels: collections.Counter[str] = collections.Counter()
        self._confidence: list[float] = []
        self._returns: list[float] = []
        self._batches: list[int] = []
        self._requests: collections.Counter[tuple] = collections.Counter()  # (version, role, route)
        self._errors: collections.Counter[tuple] = collections.Counter()  # (version, role)
        self._latency: list[tuple[str, str, float]] = []  # (version, role, ms)
        self._shadow_dropped = 0
        self._shadow_pairs: collections.deque = collections.deque(maxlen=2000)  # (champion v, challenger v, agreed)
        self.challenger_share: float | None = None
        self._model: dict[str, str] = {"model": "", "version": "", "backend": "", "role": role}
        self._reference: dict | None = None
        self._names: list[str] = []
        self._version_dirty = False
        self._last_tags: dict[str, str] | None = None
        self._psi_tags: set[tuple] = set()
        self.min_drift_rows = MIN_DRIFT_ROWS
        self._ray = None  # the ray.serve.metrics objects, created in the replica on first flush

    # -- request path (cheap) ----------------------------------------------------------------------------------------
    def model(self, name: str, version: int | None, backend: str, reference: dict | None = None,
              names: list[str] | None = None) -> None:
        self._model = {"model": name, "version": str(version if version is not None else ""), "backend": backend,
                       "role": self.role}
        self._reference, self._names = reference, list(names or [])
        self._version_dirty = True

    def batch(self, n: int) -> None:
        self._batches.append(n)

    def predictions(self, labels: Iterable[str], confidence: Iterable[float],
                    returns: Iterable[float] | None = None) -> None:
        self._labels.update(labels)
        self._confidence.extend(confidence)
        if returns is not None:
            self._returns.extend(returns)

    def request(self, version: Any, role: str, route: str, ms: float) -> None:
        self._requests[(str(version), role, route)] += 1
        self._latency.append((str(version), role, ms))

    def error(self, version: Any, role: str) -> None:
        self._errors[(str(version), role)] += 1

    def shadow(self, champion: Any, challenger: Any, agreed: float) -> None:
        self._shadow_pairs.append((str(champion), str(challenger), agreed))

    def shadow_dropped(self) -> None:
        self._shadow_dropped += 1

    # -- flushing ------------------------------------------------------------------------------------------------------
    def _objects(self):
        if self._ray is None:
            from ray.serve.metrics import Counter, Gauge, Histogram
            tags = ("model", "version", "backend", "role")
            self._ray = {
                "predictions": Counter("stocktrend_predictions", "predictions by predicted label",
                                       tag_keys=(*tags, "label")),
                "confidence": Histogram("stocktrend_confidence", "confidence of each prediction",
                                        boundaries=CONFIDENCE_BUCKETS, tag_keys=tags),
                "returns": Histogram("stocktrend_predicted_abs_return", "size of each predicted forward return (its "
                                     "sign is the label of stocktrend_predictions)", boundaries=ABS_RETURN_BUCKETS,
                                     tag_keys=tags),
                "batch": Histogram("stocktrend_batch_size", "windows per model call", boundaries=BATCH_BUCKETS,
                                   tag_keys=tags),
                "version": Gauge("stocktrend_model_version", "model version this replica serves (1 per replica)",
                                 tag_keys=tags),
                "requests": Counter("stocktrend_requests", "requests answered, by the version and role that "
                                    "answered", tag_keys=("model", "version", "role", "path")),
                "errors": Counter("stocktrend_request_errors", "requests a model failed (the client got the "
                                  "champion's answer or an error)", tag_keys=("model", "version", "role")),
                "latency": Histogram("stocktrend_request_latency_ms", "time to answer in the replica, by answering "
                                     "version", boundaries=LATENCY_BUCKETS_MS, tag_keys=("model", "version", "role")),
                "psi": Gauge("stocktrend_feature_psi", "PSI of a model input over the served window against its "
                             "training deciles (the largest ones)", tag_keys=(*tags, "feature")),
                "psi_max": Gauge("stocktrend_feature_psi_max", "largest PSI of any model input over the served "
                                 "window", tag_keys=tags),
                "shift": Gauge("stocktrend_class_mix_shift_pp", "largest absolute difference between a class's "
                               "served share and its validation share, percentage points", tag_keys=tags),
                "mean_conf": Gauge("stocktrend_mean_confidence", "mean confidence over the served window",
                                   tag_keys=tags),
                "ref_conf": Gauge("stocktrend_reference_confidence", "mean confidence on the validation segment: "
                                  "the reference of stocktrend_mean_confidence", tag_keys=tags),
                "window": Gauge("stocktrend_drift_window_rows", "rows in the served window behind the drift gauges",
                                tag_keys=tags),
                "share": Gauge("stocktrend_challenger_share", "share of traffic routed to the challenger (0 when "
                               "shadowing or disabled)", tag_keys=("model",)),
                "dropped": Counter("stocktrend_shadow_dropped", "shadow calls dropped because the queue was full",
                                   tag_keys=("model",)),
                "agreement": Gauge("stocktrend_shadow_agreement", "share of shadowed predictions where the "
                                   "challenger's label equals the champion's", tag_keys=("model", "champion_version",
                                                                                          "challenger_version")),
            }
        return self._ray

    def take(self, drift: Callable[[], tuple] | None = None) -> dict[str, Any]:
        """Swap the request-path buffers out (on the event loop, where requests append: nothing races)."""
        taken = {"labels": self._labels, "conf": self._confidence, "rets": self._returns, "batches": self._batches,
                 "requests": self._requests, "errors": self._errors, "latency": self._latency,
                 "dropped": self._shadow_dropped, "pairs": list(self._shadow_pairs), "tags": dict(self._model),
                 "share": self.challenger_share, "drift": drift() if drift is not None else None}
        self._labels, self._confidence, self._returns, self._batches = collections.Counter(), [], [], []
        self._requests, self._errors, self._latency, self._shadow_dropped = (collections.Counter(),
                                                                             collections.Counter(), [], 0)
        return taken

    def flush(self, drift: Callable[[], tuple] | None = None) -> None:
        self.publish(self.take(drift))

    def publish(self, t: dict[str, Any]) -> None:
        """Hand what ``take`` swapped out to Ray, and compute the drift gauges (off the event loop)."""
        m = self._objects()
        tags = t["tags"]
        for label, n in t["labels"].items():
            m["predictions"].inc(n, tags={**tags, "label": label})
        for v in t["conf"]:
            m["confidence"].observe(v, tags=tags)
        for v in t["rets"]:
            m["returns"].observe(abs(v), tags=tags)
        for v in t["batches"]:
            m["batch"].observe(v, tags=tags)
        name = tags["model"]
        for (version, role, path), n in t["requests"].items():
            m["requests"].inc(n, tags={"model": name, "version": version, "role": role, "path": path})
        for (version, role), n in t["errors"].items():
            m["errors"].inc(n, tags={"model": name, "version": version, "role": role})
        for version, role, ms in t["latency"]:
            m["latency"].observe(max(ms, 1e-3), tags={"model": name, "version": version, "role": role})
        if t["dropped"]:
            m["dropped"].inc(t["dropped"], tags={"model": name})
        if t["share"] is not None:
            m["share"].set(t["share"], tags={"model": name})
        pairs: dict[tuple, list[float]] = {}
        for cv, hv, agreed in t["pairs"]:
            pairs.setdefault((cv, hv), []).append(agreed)
        for (cv, hv), vals in pairs.items():
            m["agreement"].set(float(np.mean(vals)), tags={"model": name, "champion_version": cv,
                                                           "challenger_version": hv})
        # One gauge series per (model, version, backend, role): 1 = served now, re-set at every flush (Ray exports a
        # gauge only while it is being set). After a hot swap the previous series is set to 0.
        if self._version_dirty and self._last_tags and self._last_tags != tags:
            m["version"].set(0, tags=self._last_tags)
        m["version"].set(1, tags=tags)
        self._last_tags, self._version_dirty = tags, False
        if t["drift"] is not None:
            self._flush_drift(m, tags, t["drift"])

    def _flush_drift(self, m, tags: dict[str, str], snapshot: tuple) -> None:
        from stocktrend.platform.evaluation.drift import drift_summary
        rows, labels, conf = snapshot
        m["window"].set(len(labels), tags=tags)
        if not len(labels) or len(labels) < self.min_drift_rows:  # too few rows to judge: no gauge, no alert
            return
        s = drift_summary(self._reference, rows, self._names, labels, conf)
        m["mean_conf"].set(s["mean_confidence"], tags=tags)
        if np.isfinite(s.get("reference_mean_confidence", float("nan"))):
            m["ref_conf"].set(s["reference_mean_confidence"], tags=tags)
        if np.isfinite(s["psi_max"]):
            m["psi_max"].set(s["psi_max"], tags=tags)
            top = sorted(s["psi"].items(), key=lambda kv: -kv[1])[:PSI_TOP]
            for feature, value in top:
                m["psi"].set(value, tags={**tags, "feature": feature})
        if np.isfinite(s["class_shift_max_pp"]):
            m["shift"].set(s["class_shift_max_pp"], tags=tags)

    async def run(self, drift: Callable[[], tuple] | None = None) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                taken = self.take(drift)  # on the loop: a swap, microseconds
                await asyncio.to_thread(self.publish, taken)  # PSI and Ray's calls off the loop
            except Exception as exc:  # metrics must never take the replica down
                log.warning("metrics flush failed: %s", exc)
