"""Serving latency and throughput, from the floor of the stack up, in one run with one client.

    python bench/serve_load.py [--presets small,seed] [--backends torch,torch-bf16,onnx,onnx-int8]
                               [--requests 400] [--time-cap 15]

Settings, all loaded by the same bounded async aiohttp client on loopback (fixed request count and time cap each):
1. floor: uvicorn + FastAPI no-op that reads the body (no Ray), in its own process;
2. a Ray Serve no-op deployment through Ray's Python proxy, then through the HAProxy ingress (each ingress is fixed when
   Ray starts, so each runs in its own child process with its own Ray instance);
3. the stocktrend endpoint (1 replica, 1 CPU, HAProxy ingress, batching on: the app's defaults) for every
   preset x backend: one 30-day window as JSON at concurrency 1 and 32, and 32-window .npy bodies at concurrency 4
   (samples/s), next to the same backend in-process on 1 thread (what a 1-CPU replica has).
Also printed: the cost of turning a request body into an array (pydantic/jiter + numpy, numpy's own text parser, .npy).
Random weights: speed does not depend on them. Targets (issue 12), small preset, one window as JSON: c=1 p50 <= floor
+ 2.5 ms and p99 <= 10 ms; c=32 >= 1,000 req/s with 0 errors; seed preset batch 1: ONNX or bf16 <= 0.6x torch fp32.
"""

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    from stocktrend.platform.ports import free_port  # below the ephemeral range: Ray cannot take it first
    return free_port()


async def load(url: str, body: bytes, ctype: str, n: int, concurrency: int, cap: float, timeout: float = 60.0
               ) -> tuple[list[float], int, float]:
    """``n`` POSTs of ``body`` from ``concurrency`` workers, none started after ``cap`` seconds: (latencies s, errors:
    non-200 answers, connection errors and requests over ``timeout`` s, wall s)."""
    import aiohttp
    lat: list[float] = []
    errors = 0
    sent = 0
    t_end = time.perf_counter() + cap
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async def worker():
            nonlocal sent, errors
            while sent < n and time.perf_counter() < t_end:
                sent += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"content-type": ctype}) as r:
                        await r.read()
                        errors += r.status != 200
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors += 1
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return lat, errors, wall


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def bodies(x: np.ndarray) -> dict[str, bytes]:
    buf = io.BytesIO()
    np.save(buf, x)
    return {"one_json": json.dumps({"windows": x[:1].tolist()}).encode(), "many_npy": buf.getvalue()}


def run_setting(label: str, url: str, body: bytes, ctype: str, conc: int, windows: int, args) -> dict:
    n = args.requests if conc == 1 else args.requests * 8
    asyncio.run(load(url, body, ctype, 50, min(conc, 4), 5))  # warm-up (connections, first calls)
    lat, errors, wall = asyncio.run(load(url, body, ctype, n, conc, args.time_cap))
    row = {"setting": label, "conc": conc, "p50": pct(lat, 50), "p99": pct(lat, 99), "rps": len(lat) / wall,
           "sps": windows * len(lat) / wall, "errors": errors, "n": len(lat)}
    print(f"  {label:<44} c={conc:<2} p50 {row['p50']:7.2f} ms  p99 {row['p99']:7.2f} ms  {row['rps']:7.1f} req/s  "
          f"{row['sps']:8.1f} samples/s  errors {errors}/{len(lat)}", flush=True)
    return row


def parse_costs(x: np.ndarray) -> None:
    from stocktrend.serve.schemas import PredictRequest
    print("\nbody -> float32 array (median of 200, in this process):")
    for n in (1, 32):
        xb = x[:n]
        body = json.dumps({"windows": xb.tolist()}).encode()
        text = body[body.index(b"["):body.rindex(b"]") + 1].translate(bytes.maketrans(b"[]", b"  "))
        buf = io.BytesIO()
        np.save(buf, xb)
        npy = buf.getvalue()
        ways = {"pydantic (jiter) + np.asarray": lambda: np.asarray(PredictRequest.model_validate_json(body).windows,
                                                                     dtype=np.float32),
                "numpy text parser (np.fromstring)": lambda: np.fromstring(text, dtype=np.float64, sep=","),
                ".npy body (np.load)": lambda: np.load(io.BytesIO(npy), allow_pickle=False)}
        for name, fn in ways.items():
            fn()
            t = []
            for _ in range(200):
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
            print(f"  {n:>2} window(s): {name:<36} {statistics.median(t) * 1e6:8.1f} us")


def in_process(served, x: np.ndarray) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) at batch 1 and samples/s at batch 32, on the replica's thread count."""
    for b in (1, 32):
        served.predict_proba(x[:b], 512, True)
    t1 = []
    for _ in range(300):
        t0 = time.perf_counter()
        served.predict_proba(x[:1], 512, True)
        t1.append(time.perf_counter() - t0)
    t32 = []
    for _ in range(40):
        t0 = time.perf_counter()
        served.predict_proba(x, 512, True)
        t32.append(time.perf_counter() - t0)
    return statistics.median(t1) * 1000, pct(t1, 99), len(x) / statistics.median(t32)


def register_model(data, preset: str, home: str, name: str | None = None) -> tuple:
    """A HybridNet of ``preset`` with random weights (seed 0; speed does not depend on them) saved under ``home`` and
    registered in the registry of $STOCKTREND_HOME as ``name`` (default bench-<preset>): (model, checkpoint path,
    version). Also used by bench/peers/serving.py."""
    import torch

    from stocktrend.models.hybrid import HybridNet
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
    from stocktrend.platform.training.local import model_config_for
    name = name or f"bench-{preset}"
    torch.manual_seed(0)
    mcfg = model_config_for(data, preset)
    model = HybridNet(mcfg).eval()
    path = save_checkpoint(make_checkpoint(model, mcfg, data), os.path.join(home, f"{preset}.pt"))
    with registry.tracked_run(name, {}) as r:
        version = registry.register_checkpoint(path, r.info.run_id, name)
    return model, path, version


# -- child process: one Ray instance with one ingress ---------------------------------------------------------------
def child(args) -> None:
    from stocktrend.serve.ingress import FAST_INGRESS_ENV, PYTHON_PROXY_ENV
    os.environ.update(FAST_INGRESS_ENV if args.child == "haproxy" else PYTHON_PROXY_ENV)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    home = tempfile.mkdtemp(prefix="serve-bench-")
    os.environ["STOCKTREND_HOME"] = home
    import logging
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from ray import serve

    from stocktrend.platform.data.dataset import build_dataset
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.serve.app import app_builder
    from stocktrend.platform.registry.inference import ServedModel

    data = build_dataset()
    x = data.windows(data.samples["test"][:32]).astype(np.float32)
    b = bodies(x)
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, runtime_env={"env_vars": {"STOCKTREND_HOME": home}})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/predict"
    rows = []

    noop_api = FastAPI()

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
    @serve.ingress(noop_api)
    class NoOp:
        @noop_api.post("/predict")
        async def predict(self, request: Request) -> Response:
            await request.body()
            return Response(b'{"ok": true}', media_type="application/json")

    serve.run(NoOp.bind(), name="bench", route_prefix="/")
    print(f"\nRay Serve no-op deployment, {args.child} ingress", flush=True)
    for conc in (1, 32):
        rows.append(run_setting(f"serve no-op ({args.child})", url, b["one_json"], "application/json", conc, 1, args))
    serve.delete("bench")

    if args.child == "haproxy":
        torch.set_num_threads(1)
        for name in args.presets.split(","):
            model, path, version = register_model(data, name, home)
            pred = Predictor.load(path)
            print(f"\npreset {name} ({sum(p.numel() for p in model.parameters()):,} parameters), {args.replicas} "
                  f"replica(s) x 1 CPU, HAProxy ingress", flush=True)
            for backend in args.backends.split(","):
                served = ServedModel(pred, backend, threads=1)
                p50, p99, sps = in_process(served, x)
                print(f"  in-process {backend:<10} (1 thread, {served.backend} serving, max |p - p_fp32| "
                      f"{served.max_abs_diff:.1e}): batch 1 p50 {p50:.2f} ms, p99 {p99:.2f} ms; batch 32 {sps:,.0f} "
                      f"samples/s", flush=True)
                rows.append({"setting": f"{name} {backend} in-process", "conc": 0, "p50": p50, "p99": p99,
                             "sps": sps})
                serve.run(app_builder({"model": f"bench-{name}@{version}", "poll_interval_s": 0,
                                       "min_replicas": args.replicas, "max_replicas": args.replicas, "num_cpus": 1,
                                       "max_ongoing_requests": 64,
                                       "max_queued_requests": 512, "backend": backend}),
                          name="bench", route_prefix="/")
                rows.append(run_setting(f"{name} {backend}: 1 window JSON", url, b["one_json"], "application/json",
                                        1, 1, args))
                rows.append(run_setting(f"{name} {backend}: 1 window JSON", url, b["one_json"], "application/json",
                                        32, 1, args))
                rows.append(run_setting(f"{name} {backend}: 32 windows .npy", url, b["many_npy"],
                                        "application/x-npy", 4, 32, args))
            serve.delete("bench")
    serve.shutdown()
    ray.shutdown()
    with open(args.out, "w") as f:
        json.dump(rows, f)


# -- parent: the floor, then one child per ingress ------------------------------------------------------------------
def floor(args) -> list[dict]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "noop_app:app", "--app-dir", HERE, "--port", str(port),
                             "--log-level", "warning", "--no-access-log"])
    try:
        import urllib.request
        end = time.time() + 30
        while time.time() < end:
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=b"{}"),
                                       timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        x = np.zeros((1, 30, 50), np.float32)
        one = json.dumps({"windows": x.tolist()}).encode()
        print("floor: uvicorn + FastAPI no-op reading the same body (no Ray), its own process", flush=True)
        return [run_setting("uvicorn no-op", f"http://127.0.0.1:{port}/predict", one, "application/json", conc, 1,
                            args) for conc in (1, 32)]
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="small,seed")
    ap.add_argument("--backends", default="torch,torch-bf16,onnx,onnx-int8")
    ap.add_argument("--requests", type=int, default=400, help="requests per setting at c=1 (x8 at higher c)")
    ap.add_argument("--time-cap", type=float, default=15.0, help="seconds per setting at most")
    ap.add_argument("--replicas", type=int, default=1, help="replicas of the stocktrend deployment (1 CPU each)")
    ap.add_argument("--child", choices=["python", "haproxy"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    rows = floor(args)
    for ingress in ("python", "haproxy"):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        subprocess.run([sys.executable, __file__, "--child", ingress, "--out", out, "--presets", args.presets,
                        "--backends", args.backends, "--requests", str(args.requests), "--time-cap",
                        str(args.time_cap), "--replicas", str(args.replicas)], check=True)
        rows += json.load(open(out))
    from stocktrend.platform.data.dataset import build_dataset
    data = build_dataset()
    parse_costs(data.windows(data.samples["test"][:32]).astype(np.float32))
    summarize(rows)


def summarize(rows: list[dict]) -> None:
    by = {(r["setting"], r["conc"]): r for r in rows}
    fl = by.get(("uvicorn no-op", 1))
    print("\nagainst the targets:")
    small = [r for r in rows if r["setting"].startswith("small ") and r["setting"].endswith("1 window JSON")]
    for r in small:
        if r["conc"] == 1 and fl:
            print(f"  {r['setting']}: c=1 p50 {r['p50']:.2f} ms vs floor {fl['p50']:.2f} + 2.5 = {fl['p50'] + 2.5:.2f} "
                  f"ms -> {'met' if r['p50'] <= fl['p50'] + 2.5 else 'NOT met'}; p99 {r['p99']:.2f} ms vs 10 ms -> "
                  f"{'met' if r['p99'] <= 10 else 'NOT met'}")
        if r["conc"] == 32:
            ok = r["rps"] >= 1000 and r["errors"] == 0
            print(f"  {r['setting']}: c=32 {r['rps']:.0f} req/s, errors {r['errors']} vs >= 1,000 and 0 -> "
                  f"{'met' if ok else 'NOT met'}")
    ref = by.get(("seed torch in-process", 0))
    if ref:
        for backend in ("onnx", "torch-bf16", "onnx-int8"):
            r = by.get((f"seed {backend} in-process", 0))
            if r:
                print(f"  seed batch 1 in-process: {backend} {r['p50']:.2f} ms = {r['p50'] / ref['p50']:.2f}x torch fp32 "
                      f"({ref['p50']:.2f} ms) vs <= 0.6x -> {'met' if r['p50'] <= 0.6 * ref['p50'] else 'NOT met'}")


if __name__ == "__main__":
    main()
