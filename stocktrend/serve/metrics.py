"""The endpoint's own metrics, through Ray's metrics system so that they add up across replicas and nodes.

Ray Serve already counts requests, errors and latency per deployment, route and status code (``ray_serve_*``). On top
of those each replica reports what only the platform knows: the predicted class mix, the confidence of predictions,
the windows per model call, and which model version and inference backend it serves. They are
``ray.serve.metrics`` objects (tagged with application, deployment and replica by Ray), exported by every node's
metrics agent on Ray's metrics endpoint, where one Prometheus scrape config covers the whole cluster (README,
"Metrics").

Off the request path: a request only appends to plain Python lists and counters (microseconds); a background task of
the replica hands the accumulated values to Ray every ``FLUSH_S`` seconds. Ray's own exporter runs on its own
schedule after that (10 s by default), so a scrape sees a prediction within ~15 s.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Iterable

log = logging.getLogger("stocktrend.serve")

FLUSH_S = 2.0
CONFIDENCE_BUCKETS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ABS_RETURN_BUCKETS = [0.0025, 0.005, 0.01, 0.02, 0.05, 0.1]  # Ray's histograms take positive bounds only


class ServeMetrics:
    """Accumulates on the request path, flushes to ``ray.serve.metrics`` from ``run()``."""

    def __init__(self) -> None:
        self._labels: collections.Counter[str] = collections.Counter()
        self._confidence: list[float] = []
        self._returns: list[float] = []
        self._batches: list[int] = []
        self._model: dict[str, str] = {"model": "", "version": "", "backend": ""}
        self._version_dirty = False
        self._last_tags: dict[str, str] | None = None
        self._ray = None  # the ray.serve.metrics objects, created in the replica on first flush

    # -- request path (cheap) ----------------------------------------------------------------------------------------
    def model(self, name: str, version: int | None, backend: str) -> None:
        self._model = {"model": name, "version": str(version if version is not None else ""), "backend": backend}
        self._version_dirty = True

    def batch(self, n: int) -> None:
        self._batches.append(n)

    def predictions(self, labels: Iterable[str], confidence: Iterable[float],
                    returns: Iterable[float] | None = None) -> None:
        self._labels.update(labels)
        self._confidence.extend(confidence)
        if returns is not None:
            self._returns.extend(returns)

    # -- flushing ------------------------------------------------------------------------------------------------------
    def _objects(self):
        if self._ray is None:
            from ray.serve.metrics import Counter, Gauge, Histogram
            tags = ("model", "version", "backend")
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
            }
        return self._ray

    def flush(self) -> None:
        m = self._objects()
        tags = dict(self._model)
        labels, self._labels = self._labels, collections.Counter()
        conf, self._confidence = self._confidence, []
        rets, self._returns = self._returns, []
        batches, self._batches = self._batches, []
        for label, n in labels.items():
            m["predictions"].inc(n, tags={**tags, "label": label})
        for v in conf:
            m["confidence"].observe(v, tags=tags)
        for v in rets:
            m["returns"].observe(abs(v), tags=tags)
        for v in batches:
            m["batch"].observe(v, tags=tags)
        # One gauge series per (model, version, backend): 1 = served now, re-set at every flush (Ray exports a gauge
        # only while it is being set). After a hot swap the previous series is set to 0, so sum() over replicas says
        # how many replicas serve each version.
        if self._version_dirty and self._last_tags and self._last_tags != tags:
            m["version"].set(0, tags=self._last_tags)
        m["version"].set(1, tags=tags)
        self._last_tags, self._version_dirty = tags, False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                self.flush()
            except Exception as exc:  # metrics must never take the replica down
                log.warning("metrics flush failed: %s", exc)
