"""What a challenger costs the champion's requests: the same endpoint with no challenger, with 20% of requests split to
a challenger, and with the challenger shadowing every request, side by side in one run (one Ray instance, the HAProxy
ingress, one client).

    python bench/serve_challenger.py [--preset small] [--requests 400] [--rounds 5]

Three applications run at once, each a 1-replica champion (small hybrid, random weights, ONNX backend, 0.25 CPU and
one inference thread) and, for split and shadow, a 1-replica challenger (another version of the same model, the
same). Five replicas on 2 cores: the figures compare the settings, they are not the endpoint at its best. The client
sends one 30-day window as JSON (distinct X-Stocktrend-Key per request) at concurrency 1, then a burst at concurrency
32; the three settings are measured in turn within each round (A B C, A B C, ...) so drift in the machine's load hits them
alike. Prints per setting the median over rounds of p50 / p99 and req/s, the errors, and the share answered by the
champion. Target (issue 26): shadow adds at most 0.3 ms to the champion's c=1 p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import _free_port, pct  # noqa: E402


async def load(url: str, windows: list, n: int, concurrency: int, cap: float) -> dict:
    import aiohttp
    lat: list[float] = []
    errors = champion = sent = 0
    t_end = time.perf_counter() + cap
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            nonlocal sent, errors, champion
            while sent < n and time.perf_counter() < t_end:
                sent += 1
                body = json.dumps({"windows": windows}).encode()
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"content-type": "application/json",
                                                                     "x-stocktrend-key": f"k{sent}"}) as r:
                        payload = await r.read()
                        if r.status != 200:
                            errors += 1
                        elif json.loads(payload).get("role", "champion") == "champion":
                            champion += 1
                except aiohttp.ClientError:
                    errors += 1
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return {"lat": lat, "errors": errors, "champion": champion, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--requests", type=int, default=400, help="requests per setting and round at c=1")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burst-s", type=float, default=5.0, help="seconds at c=32 per setting and round")
    args = ap.parse_args()
    from stocktrend.serve.ingress import configure_ingress
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    home = tempfile.mkdtemp(prefix="serve-challenger-")
    os.environ["STOCKTREND_HOME"] = home
    ingress = configure_ingress()
    import logging
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch
    from ray import serve

    from stocktrend.models.hybrid import HybridNet
    from stocktrend.platform.data.dataset import build_dataset
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
    from stocktrend.platform.training.local import model_config_for
    from stocktrend.serve.app import app_builder

    data = build_dataset()
    x = data.windows(data.samples["test"][:1]).astype(np.float32)
    mcfg = model_config_for(data, args.preset)
    for seed in (0, 1):  # two versions of one model: the same inputs, other weights
        torch.manual_seed(seed)
        path = save_checkpoint(make_checkpoint(HybridNet(mcfg).eval(), mcfg, data), os.path.join(home, f"v{seed}.pt"))
        with registry.tracked_run(f"bench-v{seed}", {}) as r:
            registry.register_checkpoint(path, r.info.run_id, "bench")
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, runtime_env={"env_vars": {"STOCKTREND_HOME": home}})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = {"model": "bench@1", "poll_interval_s": 0, "min_replicas": 1, "max_replicas": 1, "num_cpus": 0.25,
            "challenger_num_cpus": 0.25, "backend": "onnx", "max_ongoing_requests": 64, "max_queued_requests": 512}
    settings = {"champion alone": {}, "split 20% to challenger": {"challenger": "bench@2", "challenger_split": 0.2},
                "shadow (challenger gets a copy)": {"challenger": "bench@2", "shadow": True}}
    for k, (name, extra) in enumerate(settings.items()):
        serve.run(app_builder({**base, **extra}), name=f"app{k}", route_prefix=f"/app{k}")
    urls = {name: f"http://127.0.0.1:{port}/app{k}/predict" for k, name in enumerate(settings)}
    windows = x.tolist()
    for url in urls.values():
        asyncio.run(load(url, windows, 100, 4, 10))  # warm-up
    per: dict[str, list[dict]] = {name: [] for name in settings}
    print(f"{args.preset} preset, ONNX, one window as JSON, {ingress} ingress; {args.rounds} rounds x "
          f"{args.requests} requests at c=1 + {args.burst_s:g} s at c=32 per setting", flush=True)
    for rnd in range(args.rounds):
        for name, url in urls.items():
            one = asyncio.run(load(url, windows, args.requests, 1, 120))
            burst = asyncio.run(load(url, windows, 10 ** 9, 32, args.burst_s))
            row = {"p50": pct(one["lat"], 50), "p99": pct(one["lat"], 99), "rps": len(burst["lat"]) / burst["wall"],
                   "errors": one["errors"] + burst["errors"], "n": len(one["lat"]) + len(burst["lat"]),
                   "champion": (one["champion"] + burst["champion"]) / max(1, len(one["lat"]) + len(burst["lat"]))}
            per[name].append(row)
            print(f"  round {rnd + 1} {name:<32} c=1 p50 {row['p50']:.2f} ms p99 {row['p99']:.2f} ms; c=32 "
                  f"{row['rps']:.0f} req/s; errors {row['errors']}/{row['n']}; champion answered "
                  f"{row['champion']:.1%}", flush=True)
    print("\nmedian over rounds:")
    print(f"  {'setting':<32} {'c=1 p50':>9} {'c=1 p99':>9} {'c=32 req/s':>11} {'errors':>7} {'champion':>9} "
          f"{'p50 - alone':>12}")
    alone = statistics.median(r["p50"] for r in per["champion alone"])
    for name, rows in per.items():
        p50 = statistics.median(r["p50"] for r in rows)
        print(f"  {name:<32} {p50:7.2f} ms {statistics.median(r['p99'] for r in rows):6.2f} ms "
              f"{statistics.median(r['rps'] for r in rows):11.0f} {sum(r['errors'] for r in rows):7d} "
              f"{statistics.median(r['champion'] for r in rows):9.1%} {p50 - alone:+10.2f} ms")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
