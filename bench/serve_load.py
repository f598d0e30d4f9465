"""HTTP serving latency/throughput on loopback vs the same model called in-process.

    python bench/serve_load.py [--presets small,seed] [--requests 300] [--time-cap 25] [--grpc-proxy]

For each preset a model of that size (random weights; speed does not depend on them) is registered and served by Ray
Serve (1 replica, 1 CPU) and loaded by a bounded async aiohttp load generator (a fixed number of requests and a time
cap per setting):
- single-window JSON requests at concurrency 1, 8 and 32, with ``@serve.batch`` on (max batch 32, 2 ms wait) and off;
- 32-window requests (JSON and binary .npy bodies) at concurrency 1 and 4 with batching on: samples/s over HTTP.
Next to it: the in-process Predictor at batch 1 and 32 with torch on 1 thread (what a 1-CPU replica gets) and with
torch's default, and the floor of the stack: a no-op FastAPI deployment that reads the same single-window body.
``--grpc-proxy`` sets RAY_SERVE_PROXY_USE_GRPC=1 (proxy -> replica over gRPC; Ray marks it experimental).
Goals (issue 6): HTTP p50 at concurrency 1 within in-process + 5 ms; batched HTTP samples/s >= 80% of in-process
batched; small-preset p99 < 10 ms at concurrency 1.
"""

import argparse
import asyncio
import io
import json
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


async def load(url: str, body: bytes, ctype: str, n: int, concurrency: int, cap: float
               ) -> tuple[list[float], int, float]:
    import aiohttp
    lat: list[float] = []
    errors = 0
    sent = 0
    t_end = time.perf_counter() + cap
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            nonlocal sent, errors
            while sent < n and time.perf_counter() < t_end:
                sent += 1
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers={"content-type": ctype}) as r:
                    await r.read()
                    errors += r.status != 200
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return lat, errors, wall


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def in_process(pred, x: np.ndarray, threads: int | None) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) at batch 1 and samples/s at batch 32."""
    import torch
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for b in (1, 32):
            pred.predict_proba(x[:b], 512, True)
        t1 = []
        for _ in range(200):
            t0 = time.perf_counter()
            pred.predict_proba(x[:1], 512, True)
            t1.append(time.perf_counter() - t0)
        t32 = []
        for _ in range(30):
            t0 = time.perf_counter()
            pred.predict_proba(x, 512, True)
            t32.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return statistics.median(t1) * 1000, pct(t1, 99), len(x) / statistics.median(t32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="small,seed")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--time-cap", type=float, default=25.0)
    ap.add_argument("--grpc-proxy", action="store_true", help="RAY_SERVE_PROXY_USE_GRPC=1")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.grpc_proxy:
        os.environ["RAY_SERVE_PROXY_USE_GRPC"] = "1"
    home = tempfile.mkdtemp(prefix="serve-bench-")
    os.environ["STOCKTREND_HOME"] = home
    import logging
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from ray import serve

    from stocktrend.models.hybrid import HybridNet
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint, save_checkpoint
    from stocktrend.platform.data.dataset import build_dataset
    from stocktrend.platform.training.local import model_config_for
    from stocktrend.serve.app import app_builder

    data = build_dataset()
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, runtime_env={"env_vars": {"STOCKTREND_HOME": home}})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/predict"
    x = data.windows(data.samples["test"][:32]).astype(np.float32)
    one_json = json.dumps({"windows": x[:1].tolist()}).encode()
    many_json = json.dumps({"windows": x.tolist()}).encode()
    buf = io.BytesIO()
    np.save(buf, x)
    many_npy = buf.getvalue()
    print(f"bodies: 1 window JSON {len(one_json):,} B; 32 windows JSON {len(many_json):,} B, .npy {len(many_npy):,} B;"
          f" grpc proxy {'on' if args.grpc_proxy else 'off'}")

    def run(label: str, body: bytes, ctype: str, conc: int, windows: int) -> None:
        lat, errors, wall = asyncio.run(load(url, body, ctype, args.requests, conc, args.time_cap))
        print(f"  {label:<34} conc {conc:>2}: p50 {pct(lat, 50):7.2f} ms, p99 {pct(lat, 99):7.2f} ms, "
              f"{len(lat) / wall:6.1f} req/s, {windows * len(lat) / wall:7.1f} samples/s, errors {errors}", flush=True)

    # The floor: the same proxy -> replica path with a handler that only reads the body.
    floor_api = FastAPI()

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
    @serve.ingress(floor_api)
    class NoOp:
        @floor_api.post("/predict")
        async def predict(self, request: Request) -> Response:
            await request.body()
            return Response(b'{"ok": true}', media_type="application/json")

    serve.run(NoOp.bind(), name="bench", route_prefix="/")
    asyncio.run(load(url, one_json, "application/json", 50, 4, 10))
    print("\nfloor: no-op FastAPI deployment, 1-window body")
    for conc in (1, 8, 32):
        run("no-op", one_json, "application/json", conc, 1)
    serve.delete("bench")

    for name in args.presets.split(","):
        torch.manual_seed(0)
        mcfg = model_config_for(data, name)
        model = HybridNet(mcfg).eval()
        path = save_checkpoint(make_checkpoint(model, mcfg, data), os.path.join(home, f"{name}.pt"))
        with registry.tracked_run(f"bench-{name}", {}) as r:
            version = registry.register_checkpoint(path, r.info.run_id, f"bench-{name}")
        pred = Predictor.load(path)
        print(f"\npreset {name} ({sum(p.numel() for p in model.parameters()):,} parameters)")
        for threads in (1, None):
            p50, p99, sps = in_process(pred, x, threads)
            print(f"  in-process torch threads {threads or torch.get_num_threads()}: batch 1 p50 {p50:.2f} ms, "
                  f"p99 {p99:.2f} ms; batch 32 {sps:,.0f} samples/s")
        for batching in (True, False):
            serve.run(app_builder({"model": f"bench-{name}@{version}", "poll_interval_s": 0, "min_replicas": 1,
                                   "max_replicas": 1, "num_cpus": 1, "max_ongoing_requests": 64,
                                   "max_queued_requests": 256, "max_batch_size": 32 if batching else 1,
                                   "batch_wait_timeout_s": 0.002 if batching else 0.0}),
                      name="bench", route_prefix="/")
            asyncio.run(load(url, one_json, "application/json", 50, 4, 10))  # warm-up
            tag = "batching on (32, 2 ms)" if batching else "batching off"
            for conc in (1, 8, 32):
                run(f"1 window JSON, {tag}", one_json, "application/json", conc, 1)
            if batching:
                for body, ctype, kind in ((many_json, "application/json", "JSON"),
                                          (many_npy, "application/x-npy", ".npy")):
                    for conc in (1, 4):
                        run(f"32 windows {kind}, {tag}", body, ctype, conc, 32)
            serve.delete("bench")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
