"""HTTP serving latency/throughput on loopback vs the same model called in-process.

    python bench/serve_load.py [--presets small,seed] [--requests 400] [--time-cap 30]

For each preset: a model of that size (random weights; speed does not depend on them) is registered, served with Ray
Serve (1 replica) and loaded by a bounded async httpx load generator: a fixed number of single-window requests at
concurrency 1, 8 and 32 (and a time cap), with ``@serve.batch`` on (max batch 32, 5 ms wait) and off (max batch 1).
Next to it: the in-process Predictor at batch 1 and batch 32. Prints p50/p99 latency, requests/s and samples/s.
Goals (issue 6): HTTP p50 at concurrency 1 within in-process + 5 ms; batched HTTP samples/s >= 80% of in-process
batched; small-preset p99 < 10 ms at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import time

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, body: dict, n: int, concurrency: int, cap: float) -> tuple[list[float], int, float]:
    import httpx
    lat: list[float] = []
    errors = 0
    sent = 0
    t_end = time.perf_counter() + cap
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker():
            nonlocal sent, errors
            while sent < n and time.perf_counter() < t_end:
                sent += 1
                t0 = time.perf_counter()
                r = await client.post(url, json=body)
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return lat, errors, wall


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="small,seed")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--time-cap", type=float, default=30.0)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    home = tempfile.mkdtemp(prefix="serve-bench-")
    os.environ["STOCKTREND_HOME"] = home
    import logging
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch
    from ray import serve

    from stocktrend.models.hybrid import HybridNet
    from stocktrend.platform import registry
    from stocktrend.platform.checkpoint import Predictor, make_checkpoint, save_checkpoint
    from stocktrend.platform.dataset import build_dataset
    from stocktrend.platform.training import model_config_for
    from stocktrend.serve.app import app_builder

    data = build_dataset()
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, runtime_env={"env_vars": {"STOCKTREND_HOME": home}})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/predict"
    x = data.windows(data.samples["test"][:32]).astype(np.float32)
    for name in args.presets.split(","):
        torch.manual_seed(0)
        mcfg = model_config_for(data, name)
        model = HybridNet(mcfg).eval()
        path = save_checkpoint(make_checkpoint(model, mcfg, data), os.path.join(home, f"{name}.pt"))
        with registry.tracked_run(f"bench-{name}", {}) as run:
            version = registry.register_checkpoint(path, run.info.run_id, f"bench-{name}")
        pred = Predictor.load(path)
        # In-process reference (same thread settings as a replica would have are not forced: torch default).
        for b in (1, 32):
            pred.predict_proba(x[:b])
        t1 = []
        for _ in range(200):
            t0 = time.perf_counter()
            pred.predict_proba(x[:1])
            t1.append(time.perf_counter() - t0)
        t32 = []
        for _ in range(30):
            t0 = time.perf_counter()
            pred.predict_proba(x)
            t32.append(time.perf_counter() - t0)
        print(f"\npreset {name}: in-process p50 {statistics.median(t1) * 1000:.2f} ms / p99 {pct(t1, 99):.2f} ms at "
              f"batch 1; batch 32: {32 / statistics.median(t32):.0f} samples/s")
        body = {"windows": x[:1].tolist()}
        for batching in (True, False):
            serve.run(app_builder({"model": f"bench-{name}@{version}", "poll_interval_s": 0, "min_replicas": 1,
                                   "max_replicas": 1, "num_cpus": 1, "max_ongoing_requests": 64,
                                   "max_queued_requests": 256, "max_batch_size": 32 if batching else 1,
                                   "batch_wait_timeout_s": 0.005 if batching else 0.0}),
                      name="bench", route_prefix="/")
            asyncio.run(load(url, body, 50, 4, 10))  # warm-up
            for conc in (1, 8, 32):
                lat, errors, wall = asyncio.run(load(url, body, args.requests, conc, args.time_cap))
                print(f"  HTTP batching {'on ' if batching else 'off'} concurrency {conc:>2}: p50 {pct(lat, 50):6.2f} ms,"
                      f" p99 {pct(lat, 99):7.2f} ms, {len(lat) / wall:7.1f} req/s = samples/s, errors {errors}")
            serve.delete("bench")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
