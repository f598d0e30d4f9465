"""What watching costs: the endpoint's throughput at c=32 with a live Prometheus scraping every 5 s, side by side with
no scraper (issue 40, target: within 3%).

    python bench/metrics_cost.py [--preset small] [--seconds 20] [--rounds 3]

One local Ray instance (2 CPUs, HAProxy ingress as `stocktrend serve` runs it), the stocktrend endpoint with its
defaults (1 replica x 1 CPU, ONNX, batching on, the platform's metrics and drift gauges on), a small-preset model with
random weights (speed does not depend on them). The stack of ``stocktrend monitoring up`` runs
throughout (Prometheus scraping Ray's service-discovery file every 5 s and evaluating the real alert rules every 5 s,
Alertmanager beside it); each round loads the endpoint twice for ``--seconds`` with one window as JSON at concurrency
32 from bench/serve_load.py's bounded aiohttp client: once with Prometheus stopped (SIGSTOP: no scrape, no rule
evaluation, no CPU), once with it running; the order alternates between rounds, so both see the same machine.
Printed: each load's req/s, p50 and p99, the scrapes made and Prometheus' own CPU seconds during it, and the median
over rounds of each round's ratio on/off. Every request must answer 200. On this 2-core machine Prometheus, the
client and the endpoint share the cores: the ratio counts Prometheus' own CPU, which a real deployment runs
elsewhere. Needs the binaries of `bash deploy/prometheus/get-prometheus.sh`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import serve_load  # noqa: E402  (stdlib + numpy at import)


def scraped(prom_url: str, timeout_s: float = 60.0) -> float:
    """Seconds until Prometheus holds a series of the replica's own metrics (a scrape of the endpoint happened)."""
    import httpx
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        try:
            r = httpx.get(f"{prom_url}/api/v1/query", params={"query": "ray_stocktrend_model_version"}, timeout=5)
            if r.json()["data"]["result"]:
                return time.time() - t0
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"Prometheus scraped no ray_stocktrend_model_version series in {timeout_s:.0f} s")


def one_load(url: str, body: bytes, seconds: float) -> dict:
    asyncio.run(serve_load.load(url, body, "application/json", 200, 8, 5))  # warm-up
    lat, errors, wall = asyncio.run(serve_load.load(url, body, "application/json", 10**9, 32, seconds))
    return {"rps": len(lat) / wall, "p50": serve_load.pct(lat, 50), "p99": serve_load.pct(lat, 99), "errors": errors,
            "n": len(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from stocktrend.serve.ingress import FAST_INGRESS_ENV
    os.environ.update(FAST_INGRESS_ENV)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    home = Path(tempfile.mkdtemp(prefix="metrics-cost-"))
    os.environ["STOCKTREND_HOME"] = str(home)
    import logging
    logging.basicConfig(level=logging.WARNING)
    import ray
    from ray import serve

    from stocktrend.platform.data.dataset import build_dataset
    from stocktrend.platform.ports import free_port
    from stocktrend.serve import stack as st
    from stocktrend.serve.app import app_builder

    st.find_binaries()  # the clear error where the binaries are missing, before anything starts
    data = build_dataset()
    x = data.windows(data.samples["test"][:32]).astype("float32")
    body = serve_load.bodies(x)["one_json"]
    ray.init(num_cpus=2, log_to_driver=False, runtime_env={"env_vars": {"STOCKTREND_HOME": str(home)}})
    sd_file = Path(ray._private.worker._global_node.get_session_dir_path()) / "prom_metrics_service_discovery.json"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    _, _, version = serve_load.register_model(data, args.preset, str(home))
    serve.run(app_builder({"model": f"bench-{args.preset}@{version}", "poll_interval_s": 0, "min_replicas": 1,
                           "max_replicas": 1, "num_cpus": 1}), name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}/predict"
    print(f"endpoint: {args.preset} preset, 1 replica x 1 CPU, ONNX, HAProxy ingress; load: one window as JSON, "
          f"c=32, {args.seconds:.0f} s per load, {args.rounds} round(s)", flush=True)
    ratios, rows = [], []
    import psutil
    stack = st.start(home, free_port(), free_port(), None, st.RULES, sd_file, scrape_interval="5s",
                     evaluation_interval="5s")
    prom = psutil.Process(stack.procs[-1].pid)  # Alertmanager first, then Prometheus
    try:
        print(f"Prometheus answered; first scrape of the endpoint after {scraped(stack.prometheus_url):.1f} s",
              flush=True)
        for r in range(args.rounds):
            got = {}
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                if mode == "off":
                    prom.suspend()  # SIGSTOP: no scrape, no rule evaluation, no CPU
                before = sum(prom.cpu_times()[:2])
                n0 = scrapes(stack.prometheus_url) if mode == "on" else 0
                got[mode] = one_load(url, body, args.seconds)
                if mode == "off":
                    prom.resume()
                    got[mode]["note"] = "Prometheus stopped (SIGSTOP)"
                else:
                    got[mode]["note"] = (f"{scrapes(stack.prometheus_url) - n0} scrape(s) of Ray's targets, "
                                         f"Prometheus {sum(prom.cpu_times()[:2]) - before:.2f} CPU-s")
                g = got[mode]
                print(f"  round {r + 1} scraping {mode:<3}: {g['rps']:7.1f} req/s  p50 {g['p50']:6.2f} ms  p99 "
                      f"{g['p99']:6.2f} ms  errors {g['errors']}/{g['n']}  ({g['note']})", flush=True)
                if g["errors"]:
                    raise SystemExit(f"round {r + 1}: {g['errors']} request(s) failed with scraping {mode}")
            ratios.append(got["on"]["rps"] / got["off"]["rps"])
            rows.append(got)
    finally:
        try:
            prom.resume()  # SIGCONT: a stopped Prometheus must get its SIGTERM
        except psutil.Error:
            pass
        stack.stop()
        serve.shutdown()
        ray.shutdown()
    med = statistics.median(ratios)
    print(f"\nthroughput with scraping / without, per round: {', '.join(f'{v:.3f}' for v in ratios)}; median "
          f"{med:.3f} -> {'met' if med >= 0.97 else 'NOT met'} (target >= 0.97)")
    print(f"median req/s: off {statistics.median(g['off']['rps'] for g in rows):.1f}, on "
          f"{statistics.median(g['on']['rps'] for g in rows):.1f}")


def scrapes(prom_url: str) -> int:
    """Scrapes of Ray's metrics targets Prometheus has stored so far (samples of its `up` series)."""
    import httpx
    r = httpx.get(f"{prom_url}/api/v1/query", params={"query": 'sum(count_over_time(up{job="ray"}[1h]))'},
                  timeout=10).json()["data"]["result"]
    return int(float(r[0]["value"][1])) if r else 0


if __name__ == "__main__":
    main()
