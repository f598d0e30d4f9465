"""The stocktrend endpoint next to plain FastAPI, LitServe and BentoML, serving the SAME ONNX model to the SAME client
with the SAME request body, side by side in one run (issue 29).

    .venv/bin/python bench/peers/serving.py                      # everything, 3 repeats (~11 min on 2 cores)
    .venv/bin/python bench/peers/serving.py --quick              # CI smoke: tiny model, stocktrend x1 + uvicorn x1
    .venv/bin/python bench/peers/serving.py --peers stocktrend,litserve --workers 2 [--repeats 5]

Servers (each started as a subprocess in its own process group, stopped in a ``finally`` even on Ctrl-C):
- noop: the stack's floor from bench/serve_load.py, uvicorn + a FastAPI handler that only reads the body
  (platform venv);
- stocktrend: the platform's own ``stocktrend serve --port P --max-replicas N --backend onnx --num-cpus 1`` (HAProxy
  ingress, batching on, every CLI default), run in-process by a shim of this script that pins the deployment's
  ``min_replicas`` to ``--max-replicas`` as bench/serve_load.py does (``app_builder(min_replicas=max_replicas=N)``):
  the CLI alone starts at 1 replica and lets the autoscaler add the second under load;
- uvicorn: plain FastAPI + onnxruntime, ``uvicorn --workers N`` (pydantic body model, sync handler);
- litserve: LitServe, ``workers_per_device=N`` inference processes and its default N API server processes;
- bentoml: BentoML, ``workers=N``, 1 thread each; BENTOML_DO_NOT_TRACK=true, BENTOML_HOME in the run's temp dir.
The peers (bench/peers/serving_apps/) run in their own venvs under bench/peers/.venvs/serving-<peer>, created on first
use by bench/peers/_venv.py (onnxruntime and numpy pinned to the platform venv's versions, no torch), never in the
platform's venv.

The model: a HybridNet of ``--preset`` (small; tiny with --quick) with random weights, registered in a temporary
registry by bench/serve_load.py's ``register_model``; the stocktrend replicas load it from the registry and export it
to ONNX themselves; the peers load the .onnx file that ``stocktrend.platform.registry.inference.export_onnx`` (the replicas' own
export function) writes from the same registered version. Every server decodes the same JSON body, ``{"windows": [one
test window, T x F floats]}`` (bench/serve_load.py's ``bodies``), and answers class probabilities; each first answer is
checked against ONNX Runtime in this process (max |p - p_ref| in the table).

Same CPU budget: every server gets the machine's cores unpinned, N worker processes / replicas, and ONNX Runtime with 1
intra-op and 1 inter-op thread per worker / replica; the load client is one asyncio aiohttp process
(bench/serve_load.py's ``load``) pinned to core 1 with ``taskset -c 1``, the same for every row. Per server and repeat:
a fresh start, a warm-up, then c=1: ``--requests`` sequential requests (p50, p99) and c=32: 32 connections for
``--duration`` s with an end time (req/s of 200 answers); errors are non-200 answers, connection errors and requests
over 30 s. Repeats run the servers in turn (server A, B, ..., then A again), medians over ``--repeats``. Exits non-zero
if a server fails to come up or answer correctly, or any error is counted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent  # bench/peers
BENCH = HERE.parent
ROOT = BENCH.parent
APPS = HERE / "serving_apps"
for _p in (str(BENCH), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

import _venv  # noqa: E402
import serve_load  # noqa: E402  (stdlib + numpy at import)

PEERS = ("noop", "stocktrend", "uvicorn", "litserve", "bentoml")
PEER_PINS = {"uvicorn": ["fastapi==0.165.0", "uvicorn[standard]==0.54.0"], "litserve": ["litserve==0.2.19"],
             "bentoml": ["bentoml==1.4.40"]}
VERSION_NAMES = ["stocktrend", "ray", "litserve", "bentoml", "fastapi", "uvicorn", "uvloop", "onnxruntime", "numpy",
                 "aiohttp"]
REPLICA_TAG = "ServeReplica:stocktrend:StockTrendService"


class ServerError(RuntimeError):
    """A server did not start, answer, answer correctly, or be measured: names the server."""


@dataclass
class Server:
    peer: str
    workers: int
    label: str
    cmd: list[str]
    env: dict[str, str]
    cwd: str
    ready_s: float = 60.0  # bound on the readiness wait
    stop_signal: int = signal.SIGINT
    stop_s: float = 20.0  # bound on the graceful stop, then SIGKILL to the process group
    runs: list[dict] = field(default_factory=list)
    start_s: list[float] = field(default_factory=list)
    procs: list[int] = field(default_factory=list)  # processes in the server's tree once it answers
    diff: float = float("nan")
    failed: str = ""


# -- child modes ------------------------------------------------------------------------------------------------------
def stocktrend_cli(argv: list[str]) -> None:
    """``stocktrend ARGV`` in this process, with app_builder's min_replicas pinned to its max_replicas (the CLI has no
    --min-replicas; 1 replica is unchanged)."""
    import stocktrend.serve.app as serve_app
    builder = serve_app.app_builder

    def pinned(args=None):
        args = dict(args or {})
        args["min_replicas"] = args.get("max_replicas", 2)
        return builder(args)

    serve_app.app_builder = pinned  # serve_cmd imports app_builder from the module when it runs
    from stocktrend.cli import main
    sys.argv = ["stocktrend", *argv]
    main()


def client(args) -> None:
    """The load client (run under taskset): warm-up, c=1, c=32; one JSON line on stdout."""
    body = Path(args.body).read_bytes()
    ctype = "application/json"
    asyncio.run(serve_load.load(args.url, body, ctype, args.warmup, 8, 15.0, timeout=30.0))
    lat1, err1, wall1 = asyncio.run(serve_load.load(args.url, body, ctype, args.requests, 1, args.c1_cap,
                                                    timeout=30.0))
    lat32, err32, wall32 = asyncio.run(serve_load.load(args.url, body, ctype, 10 ** 9, 32, args.duration,
                                                       timeout=30.0))
    print(json.dumps({"c1_p50": serve_load.pct(lat1, 50), "c1_p99": serve_load.pct(lat1, 99), "c1_n": len(lat1),
                      "c1_errors": err1, "c32_rps": (len(lat32) - err32) / wall32, "c32_n": len(lat32),
                      "c32_errors": err32, "c32_p50": serve_load.pct(lat32, 50), "c32_p99": serve_load.pct(lat32, 99),
                      "c32_wall": wall32, "cpus": sorted(os.sched_getaffinity(0))}))


# -- servers ----------------------------------------------------------------------------------------------------------
def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join someone else's Ray cluster
    env.update(extra)
    return env


def make_servers(peers: list[str], workers: list[int], pythons: dict[str, Path], model: str, onnx_path: Path,
                 work: Path) -> list[Server]:
    out = []
    for peer in peers:
        for n in ([1] if peer == "noop" else workers):
            if peer == "noop":
                out.append(Server(peer, 1, "floor: uvicorn + FastAPI no-op, no model",
                                  [sys.executable, "-m", "uvicorn", "noop_app:app", "--app-dir", str(BENCH), "--host",
                                   "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--no-access-log"],
                                  _child_env(), str(work)))
            elif peer == "stocktrend":
                out.append(Server(peer, n, f"stocktrend serve, {n} replica{'s' if n > 1 else ''}",
                                  [sys.executable, __file__, "--stocktrend-cli", "serve", "--model", model, "--port",
                                   "{port}", "--max-replicas", str(n), "--backend", "onnx", "--num-cpus", "1"],
                                  _child_env(RAY_USAGE_STATS_ENABLED="0"), str(work), ready_s=240.0, stop_s=60.0))
            elif peer == "uvicorn":
                out.append(Server(peer, n, f"FastAPI + uvicorn, {n} worker{'s' if n > 1 else ''}",
                                  [str(pythons[peer]), "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(APPS),
                                   "--host", "127.0.0.1", "--port", "{port}", "--workers", str(n), "--log-level",
                                   "warning", "--no-access-log"],
                                  _child_env(MODEL_PATH=str(onnx_path), ORT_THREADS="1"), str(work)))
            elif peer == "litserve":
                out.append(Server(peer, n, f"LitServe, {n} worker{'s' if n > 1 else ''}",
                                  [str(pythons[peer]), str(APPS / "litserve_app.py"), "--port", "{port}", "--workers",
                                   str(n)],
                                  _child_env(MODEL_PATH=str(onnx_path), ORT_THREADS="1"), str(work), ready_s=90.0))
            elif peer == "bentoml":
                home = work / "bentoml"
                home.mkdir(exist_ok=True)
                out.append(Server(peer, n, f"BentoML, {n} worker{'s' if n > 1 else ''}",
                                  [str(pythons[peer].parent / "bentoml"), "serve", "bento_service:OnnxService",
                                   "--working-dir", str(APPS), "--host", "127.0.0.1", "--port", "{port}"],
                                  _child_env(MODEL_PATH=str(onnx_path), ORT_THREADS="1", BENTO_WORKERS=str(n),
                                             BENTOML_DO_NOT_TRACK="true", BENTOML_HOME=str(home)),
                                  str(work), ready_s=90.0))
    return out


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join("    " + ln for ln in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "    (no log)"


def _post(url: str, body: bytes, timeout: float = 5.0) -> dict:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _descendants(pid: int) -> list:
    try:
        import psutil
        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def _replicas(pid: int) -> int:
    n = 0
    for p in _descendants(pid):
        try:
            n += REPLICA_TAG in " ".join(p.cmdline())
        except Exception:
            pass
    return n


def start(s: Server, port: int, log: Path) -> subprocess.Popen:
    """``s`` on ``port``, in its own session (process group), output to ``log``."""
    cmd = [c.replace("{port}", str(port)) for c in s.cmd]
    env = dict(s.env)
    if s.peer == "stocktrend":
        # Ray's HAProxy ingress also binds fixed ports 0.0.0.0:9101 (metrics) and :8404 (stats): a second Ray Serve
        # with HAProxy on the host (another user's) makes it crash at start ("Address already in use").
        from stocktrend.platform.ports import free_port
        for key in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"):
            env.setdefault(key, str(free_port("0.0.0.0")))  # HAProxy binds them on every interface
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(cmd)}\n".encode())
        f.flush()
        return subprocess.Popen(cmd, cwd=s.cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def ready(s: Server, proc: subprocess.Popen, base: str, body: bytes, log: Path, t0: float) -> tuple[dict, float]:
    """Wait (bounded by ``s.ready_s``) until POST /predict answers 200: (first answer, seconds since ``t0``); for
    stocktrend also the served backend (onnx, no fallback) and the replica count."""
    deadline = t0 + s.ready_s
    last = "no answer yet"
    while True:
        if proc.poll() is not None:
            raise ServerError(f"{s.label}: exited with code {proc.returncode} before answering; end of {log}:\n"
                              f"{_tail(log)}")
        if time.perf_counter() > deadline:
            raise ServerError(f"{s.label}: no 200 from POST {base}/predict within {s.ready_s:.0f} s (last: {last}); "
                              f"end of {log}:\n{_tail(log)}")
        try:
            answer = _post(f"{base}/predict", body)
            break
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.read()[:200]!r}"
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    took = time.perf_counter() - t0
    if s.peer == "stocktrend":
        try:
            with urllib.request.urlopen(f"{base}/model", timeout=5) as r:
                info = json.loads(r.read())
        except (OSError, ValueError) as exc:
            raise ServerError(f"{s.label}: GET /model failed: {exc}") from None
        if info.get("backend") != "onnx":
            raise ServerError(f"{s.label}: serves the {info.get('backend')} backend, not onnx: {info.get('fallback')}")
        end = time.perf_counter() + 60
        while _replicas(proc.pid) != s.workers:  # the deployment reports RUNNING once min_replicas are up; make sure
            if time.perf_counter() > end:
                raise ServerError(f"{s.label}: {_replicas(proc.pid)} replica process(es) after 60 s, expected "
                                  f"{s.workers}")
            time.sleep(0.5)
    return answer, took


def stop(s: Server, proc: subprocess.Popen) -> None:
    """Graceful stop (bounded), then SIGKILL to the process group and to any descendant that left it."""
    interrupted = False
    kids = _descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.kill(proc.pid, s.stop_signal)
            proc.wait(s.stop_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            print(f"  [{s.label}] did not stop within {s.stop_s:.0f} s of {signal.Signals(s.stop_signal).name}: "
                  f"killing its process group", flush=True)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM while it stops: kill it now, then pass the interrupt on
            interrupted = True
    for k in kids + _descendants(proc.pid):
        try:
            k.kill()  # psutil checks the pid was not reused
        except Exception:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def probabilities(s: Server, answer: dict) -> list[list[float]]:
    if s.peer == "stocktrend":
        return [list(item["probabilities"].values()) for item in answer["predictions"]]
    return answer["probabilities"]


def measure(s: Server, url: str, body_file: Path, args) -> dict:
    bound = 15 + args.c1_cap + args.duration + 90
    cmd = ["taskset", "-c", str(args.client_core), sys.executable, __file__, "--client", "--url", url, "--body",
           str(body_file), "--requests", str(args.requests), "--duration", str(args.duration), "--warmup",
           str(args.warmup), "--c1-cap", str(args.c1_cap)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=bound)
    except subprocess.TimeoutExpired:
        raise ServerError(f"{s.label}: the load client did not finish within {bound:.0f} s") from None
    if r.returncode != 0:
        raise ServerError(f"{s.label}: the load client failed (exit {r.returncode}): {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- the run ----------------------------------------------------------------------------------------------------------
def build_model(preset: str, home: Path, work: Path):
    """Register a random-weight model, export the registered version to ONNX: (spec, onnx path, body, x, ref,
    params)."""
    from stocktrend.platform.data.dataset import build_dataset
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.registry.inference import export_onnx
    data = build_dataset()
    x = data.windows(data.samples["test"][:32]).astype(np.float32)
    model, _, version = serve_load.register_model(data, preset, str(home))
    params = sum(p.numel() for p in model.parameters())
    spec = f"bench-{preset}@{version}"
    path, _ = registry.download(*registry.parse_spec(spec))  # what `stocktrend serve --model spec` loads
    pred = Predictor.load(path)
    onnx_path = work / "model.onnx"
    export_onnx(pred, onnx_path)
    body = serve_load.bodies(x)["one_json"]
    sys.path.insert(0, str(APPS))
    from onnx_model import OnnxModel
    ref = OnnxModel(str(onnx_path))(x[:1])
    torch_ref, _ = pred.predict_proba(x[:1])
    return spec, onnx_path, body, x, ref, float(np.abs(ref - torch_ref[:, :ref.shape[1]]).max()), params


def ensure_peers(peers: list[str]) -> dict[str, Path]:
    import importlib.metadata as md
    pins = [f"onnxruntime=={md.version('onnxruntime')}", f"numpy=={md.version('numpy')}"]
    return {p: _venv.ensure(f"serving-{p}", [PEER_PINS[p] + pins], with_torch=False) for p in peers if p in PEER_PINS}


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(servers: list[Server], args, meta: dict, versions: dict[str, dict]) -> None:
    ref = next((s for s in servers if s.peer == "stocktrend" and s.workers == 1 and s.runs), None)
    base = {k: med([r[k] for r in ref.runs]) for k in ("c1_p50", "c1_p99", "c32_rps")} if ref else {}
    print(f"\nServing one ONNX model side by side ({meta['preset']} preset, {meta['params']:,} parameters, random "
          f"weights; body: 1 window of {meta['shape'][1]} x {meta['shape'][2]} as JSON, {meta['body_bytes']:,} bytes, "
          f"identical for every server)")
    print(f"same CPU budget: every server on the machine's {os.cpu_count()} cores unpinned, ONNX Runtime 1 intra-op + "
          f"1 inter-op thread per worker/replica; load client: one asyncio aiohttp process pinned to core "
          f"{args.client_core} (taskset -c {args.client_core}), the same for every row")
    print(f"per server and repeat: fresh start, {args.warmup} warm-up requests (c=8), c=1: {args.requests} sequential "
          f"requests, c=32: {args.duration:g} s; medians of {args.repeats} repeat(s) (servers in turn); ratios are to "
          f"stocktrend serve, 1 replica (latency: lower is better; req/s: higher is better)\n")
    head = (f"{'server':<40} {'c=1 p50 ms':>10} {'p99 ms':>8} {'c=32 req/s':>10} {'errors':>12} {'p50 x':>6} "
            f"{'p99 x':>6} {'req/s x':>7} {'c=32 p50/p99 ms':>16} {'start s':>7} {'procs':>5} {'max|dp|':>8}")
    print(head)
    print("-" * len(head))
    for s in servers:
        if not s.runs:
            print(f"{s.label:<40} FAILED: {s.failed.splitlines()[0] if s.failed else 'not run'}")
            continue
        m = {k: med([r[k] for r in s.runs]) for k in ("c1_p50", "c1_p99", "c32_rps", "c32_p50", "c32_p99")}
        errs = sum(r["c1_errors"] + r["c32_errors"] for r in s.runs)
        sent = sum(r["c1_n"] + r["c32_n"] for r in s.runs)
        ratio = (lambda k: f"{m[k] / base[k]:.2f}" if base else "-")
        errors = f"{errs}/{sent}"
        c32 = "{:.1f}/{:.1f}".format(m["c32_p50"], m["c32_p99"])
        diff = "-" if s.peer == "noop" else f"{s.diff:.1e}"
        later = f"  (FAILED later: {s.failed.splitlines()[0]})" if s.failed else ""
        print(f"{s.label:<40} {m['c1_p50']:>10.2f} {m['c1_p99']:>8.2f} {m['c32_rps']:>10,.0f} {errors:>12} "
              f"{ratio('c1_p50'):>6} {ratio('c1_p99'):>6} {ratio('c32_rps'):>7} {c32:>16} {med(s.start_s):>7.1f} "
              f"{max(s.procs):>5} {diff:>8}{later}")
    print("\nerrors: non-200 answers + connection errors + requests over 30 s, summed over repeats (c=1 and c=32); "
          "max|dp|: the server's first answer vs ONNX Runtime in this process; start s: start to the first 200; "
          "procs: processes in the server's tree once it answers (Ray's own included)")
    print("how each runs: stocktrend = `stocktrend serve --max-replicas N --backend onnx --num-cpus 1` (HAProxy "
          "ingress, batching on: up to 16 requests, 2 batches at a time, no wait, N replicas x 1 CPU, min_replicas "
          "pinned to N); FastAPI + uvicorn = `uvicorn --workers N`, pydantic body model, sync handler; LitServe = N "
          "inference workers + N API servers (its default), no batching; BentoML = workers=N, threads=1; "
          "floor = bench/noop_app.py under uvicorn")
    print(f"ONNX export (stocktrend.platform.registry.inference.export_onnx of {meta['spec']}) vs torch fp32: max |dp| "
          f"{meta['export_diff']:.1e}")
    print("\nversions:")
    for where, v in versions.items():
        print(f"  {where:<26} " + ", ".join(f"{k} {val}" for k, val in v.items() if val != "-"))
    print(f"machine: {os.cpu_count()} cores, load average at start {meta['load']}; shared, so treat one run as "
          f"indicative")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--stocktrend-cli":
        stocktrend_cli(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke: tiny preset, 200 requests at c=1, 3 s at c=32, "
                    "1 repeat, peers stocktrend,uvicorn with 1 worker (unless --peers/--workers say otherwise)")
    ap.add_argument("--peers", help=f"comma-separated from {','.join(PEERS)} (default all; --quick: "
                    "stocktrend,uvicorn)")
    ap.add_argument("--workers", help="workers / replicas per peer, comma-separated (default 1,2; --quick: 1)")
    ap.add_argument("--preset", help="model preset (default small; --quick: tiny)")
    ap.add_argument("--requests", type=int, help="sequential requests at c=1 (default 2000; --quick: 200)")
    ap.add_argument("--duration", type=float, help="seconds at c=32 (default 10; --quick: 3)")
    ap.add_argument("--repeats", type=int, help="repeats, medians reported (default 3; --quick: 1)")
    ap.add_argument("--warmup", type=int, help="warm-up requests before measuring (default 300; --quick: 50)")
    ap.add_argument("--c1-cap", type=float, default=120.0, help="seconds the c=1 run may take at most")
    ap.add_argument("--client-core", type=int, default=1, help="the core the load client is pinned to")
    ap.add_argument("--setup", action="store_true", help="only create the peers' virtual environments this run "
                    "would use (CI does it in its install step), then exit")
    ap.add_argument("--keep", action="store_true", help="keep the run's temp dir (model, logs) under bench/peers/.work")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--body", help=argparse.SUPPRESS)
    args = ap.parse_args()
    q = args.quick
    for name, full, quick in (("preset", "small", "tiny"), ("requests", 2000, 200), ("duration", 10.0, 3.0),
                              ("repeats", 1 if q else 3, 1), ("warmup", 300, 50)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    if args.client:
        client(args)
        return 0
    chosen = args.peers or ("stocktrend,uvicorn" if q else ",".join(PEERS))
    peers = [p.strip() for p in chosen.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad:
        ap.error(f"unknown peer(s) {', '.join(bad)}; choose from {', '.join(PEERS)}")
    workers = [int(w) for w in (args.workers or ("1" if q else "1,2")).split(",")]
    if not shutil.which("taskset") and not args.setup:
        ap.error("taskset (util-linux) is needed to pin the load client")

    def on_term(signum, frame):  # `timeout` sends SIGTERM: stop the servers as on Ctrl-C
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    if args.setup:
        for name, python in ensure_peers(peers).items():
            print(f"[serving-{name}] {python}")
        return 0
    (HERE / ".work").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serving-", dir=HERE / ".work"))
    home = work / "home"
    home.mkdir()
    os.environ["STOCKTREND_HOME"] = str(home)  # a private registry; the stocktrend server inherits it
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", module="mlflow")  # its type-hint advice on the platform's pyfunc model
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    t_run = time.perf_counter()
    ok = False
    servers: list[Server] = []
    try:
        pythons = ensure_peers(peers)
        t0 = time.perf_counter()
        spec, onnx_path, body, x, ref, export_diff, params = build_model(args.preset, home, work)
        body_file = work / "body.json"
        body_file.write_bytes(body)
        print(f"model {spec} ({args.preset}, {params:,} parameters) registered and exported to {onnx_path.name} in "
              f"{time.perf_counter() - t0:.1f} s; body {len(body):,} bytes", flush=True)
        servers = make_servers(peers, workers, pythons, spec, onnx_path, work)
        for rep in range(args.repeats):
            for s in servers:
                if s.failed:
                    continue
                port = serve_load._free_port()
                log = work / f"{s.peer}-{s.workers}.log"
                proc = None
                try:
                    t0 = time.perf_counter()
                    proc = start(s, port, log)
                    answer, took = ready(s, proc, f"http://127.0.0.1:{port}", body, log, t0)
                    diff = float(np.abs(np.asarray(probabilities(s, answer)) - ref).max()) if s.peer != "noop" else 0.0
                    if diff > 1e-4:
                        raise ServerError(f"{s.label}: answered {probabilities(s, answer)}, expected {ref.tolist()}")
                    s.diff = diff if rep == 0 else max(s.diff, diff)
                    r = measure(s, f"http://127.0.0.1:{port}/predict", body_file, args)
                    if proc.poll() is not None:
                        raise ServerError(f"{s.label}: exited (code {proc.returncode}) during the measurement")
                    s.runs.append(r)
                    s.start_s.append(took)
                    s.procs.append(1 + len(_descendants(proc.pid)))
                    print(f"[{rep + 1}/{args.repeats}] {s.label:<40} up in {took:5.1f} s; c=1 p50 {r['c1_p50']:6.2f} "
                          f"ms p99 {r['c1_p99']:6.2f} ms ({r['c1_n']} req, {r['c1_errors']} errors); c=32 "
                          f"{r['c32_rps']:7.1f} req/s ({r['c32_n']} req, {r['c32_errors']} errors)", flush=True)
                except ServerError as exc:
                    s.failed = str(exc)
                    print(f"[{rep + 1}/{args.repeats}] FAILED {exc}", flush=True)
                finally:
                    if proc is not None:
                        stop(s, proc)
        versions = {"platform venv (.venv)": _venv.versions(Path(sys.executable), VERSION_NAMES)}
        for p, py in pythons.items():  # (stocktrend would be found in the working directory's egg-info)
            versions[f"serving-{p} venv"] = _venv.versions(py, [n for n in VERSION_NAMES if n != "stocktrend"])
        report(servers, args, {"preset": args.preset, "params": params, "shape": x.shape, "body_bytes": len(body),
                               "spec": spec, "export_diff": export_diff, "load": load}, versions)
        errors = sum(r["c1_errors"] + r["c32_errors"] for s in servers for r in s.runs)
        failed = [s.label for s in servers if s.failed]
        print(f"\n{len(servers)} server(s), {len(failed)} failed{': ' + '; '.join(failed) if failed else ''}; "
              f"{errors} error(s); {time.perf_counter() - t_run:.0f} s in all")
        ok = not failed and errors == 0
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped", flush=True)
        return 130
    finally:
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"run directory kept: {work}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
