"""The streaming path at growing panel sizes: partitioned feature build, streamed plan, and a 2-worker Ray Train epoch,
with the peak resident memory of every process (issue 41's table).

    python bench/stream_scale.py --tickers 300,1000,3000 --days 3000 --epoch-windows 100000
    python bench/stream_scale.py --tickers 300 --days 3000 --in-memory          # beside today's object-store path
    python bench/stream_scale.py --tickers 300 --days 3000 --epoch-windows 0    # one full epoch
    python bench/stream_scale.py --tickers 3000 --phases build,plan,train,score # + `score` on the trained model

Per size, each phase runs in its own process (so its peak RSS is its own): ``build`` (a synthetic random-walk universe
generated in memory, as a user's CSV directory is loaded, then ``build_partitioned`` with 2 feature processes),
``plan`` (``plan_stream``: labels, split, scaler, top-K and class balance by streaming passes), ``train`` (a local Ray
instance with 2 CPUs, ``fit_ray`` on the streamed data set, the tiny lstm by default, ``--epochs`` epochs of
``--epoch-windows`` windows; 0 = every training window). While training, every process on the machine that belongs to the run (the driver,
the Ray Train workers, the Ray Data readers, Ray's own daemons) is sampled every 0.5 s with psutil; the table shows the
largest. Throughput = training windows / the slower rank's epoch time (a callback times each rank's epoch, validation
excluded: from the epoch's start to its last training batch); epochs/hour = throughput x 3600 / the oversampled
training windows of a full epoch (validation not counted).
``--in-memory`` runs the train phase on today's path instead (``build_dataset`` + the object-store transport).
``score`` (with ``--phases ...,score``): the trained model saved as the checkpoint `stocktrend train` registers, then
`stocktrend score` with its Ray Data engine (``loop.score.run_ray``: each task reads its block of tickers' bars
from the data directory and builds their features, windows and ONNX inference in an actor pool) over every ticker's
last ``--score-days`` days, in a fresh local Ray instance.
Benchmarks print figures; they assert nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _peak_gb() -> tuple[float, float]:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)


class ProcessWatch:
    """Samples the RSS of this process's descendants and of Ray's processes every ``every`` seconds; keeps each one's
    peak (by pid, with its name)."""

    def __init__(self, every: float = 0.5):
        import psutil
        self.psutil, self.every = psutil, every
        self.peak: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _name(self, p) -> str:
        try:
            cmd = " ".join(p.cmdline()[:3])
        except Exception:  # noqa: BLE001
            cmd = p.name()
        for key in ("RayTrainWorker", "_CutWindows", "MapBatches", "TrainController", "raylet", "gcs_server",
                    "dashboard", "plasma", "DatasetManager", "SplitCoordinator", "ray::"):
            if key in cmd or key in p.name():
                return key if key != "ray::" else p.name()
        return "driver" if p.pid == os.getpid() else p.name()

    def _run(self) -> None:
        me = self.psutil.Process()
        while not self._stop.is_set():
            procs = [me, *me.children(recursive=True)]
            for p in self.psutil.process_iter(["name", "cmdline"]):
                try:
                    if p.info["name"] and ("ray" in p.info["name"] or "raylet" in p.info["name"] or "gcs" in
                                           p.info["name"]):
                        procs.append(p)
                except Exception:  # noqa: BLE001
                    pass
            for p in {p.pid: p for p in procs}.values():
                try:
                    rss = p.memory_info().rss
                    name, old = self.peak.get(p.pid, (None, 0))
                    if name in (None, "python", "python3", "python3.11"):  # a Ray worker names itself once started
                        name = self._name(p)
                    self.peak[p.pid] = (name, max(rss, old))
                except Exception:  # noqa: BLE001 - gone
                    pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def by_role(self) -> dict[str, float]:
        """Largest peak RSS (GB) per process role."""
        out: dict[str, float] = {}
        for name, rss in self.peak.values():
            out[name] = max(out.get(name, 0.0), rss / 2**30)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def phase_build(args) -> dict:
    from stocktrend.platform.data.features import feature_set
    from stocktrend.platform.data.stream import build_partitioned
    from stocktrend.platform.data.synthetic import random_walk_universe
    t0 = time.perf_counter()
    universe = random_walk_universe(args.days, n_tickers=args.tickers, seed=0)
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    panel = build_partitioned(universe, feature_set(args.features), args.cache, n_jobs=args.jobs)
    self_gb, child_gb = _peak_gb()
    return {"generate_s": t_gen, "build_s": time.perf_counter() - t1, "rows": panel.rows,
            "features": len(panel.feature_names), "root": str(panel.root), "reused": panel.cache_hit,
            "rss_gb": self_gb, "children_rss_gb": child_gb}


def _data_config(args):
    from stocktrend.platform.data.dataset import DataConfig
    return DataConfig(tickers=(), label_kind="excess", sequence_length=args.seq, top_k=args.top_k,
                      features=args.features)


def phase_plan(args) -> dict:
    from stocktrend.platform.data.stream import PartitionedPanel, plan_stream
    panel = PartitionedPanel.open(args.root)
    t0 = time.perf_counter()
    plan = plan_stream(panel, _data_config(args))
    return {"plan_s": time.perf_counter() - t0, "train": plan.samples("train", balanced=True),
            "val": plan.samples("val"), "test": plan.samples("test"), "rss_gb": _peak_gb()[0]}


def phase_train(args) -> dict:
    import lightning.pytorch as pl

    from stocktrend.platform.training.distributed import RayConfig, fit_ray, shutdown_ray
    from stocktrend.platform.training.local import TrainConfig, model_config_for

    class EpochClock(pl.Callback):
        def __init__(self, folder: str):
            self.folder = folder

        def on_train_epoch_start(self, trainer, module):
            self.t0, self.rows = time.perf_counter(), 0
            self.t_last = self.t0

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.rows += len(batch[1])
            self.t_last = time.perf_counter()
            if batch_idx == 0:
                self.t_first, self.rows_first = self.t_last, self.rows

        def on_train_epoch_end(self, trainer, module):  # Lightning validates before this hook: the clock stops at
            # the last training batch (validation excluded)
            with open(Path(self.folder, f"rank{trainer.global_rank}"), "a") as f:
                f.write(json.dumps({"s": self.t_last - self.t0, "rows": self.rows, "first_s": self.t_first - self.t0,
                            "steady": (self.rows - self.rows_first) / max(self.t_last - self.t_first, 1e-9)})
                        + "\n")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tcfg = TrainConfig(preset=args.preset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                       progress=False, patience=args.epochs + 1,
                       monitor="val_rank_ic", monitor_mode="max", epoch_windows=args.epoch_windows)
    clock_dir = tempfile.mkdtemp(prefix="stream-clock-")
    t0 = time.perf_counter()
    with ProcessWatch() as watch:
        if args.in_memory:
            from stocktrend.platform.data.dataset import build_dataset
            from stocktrend.platform.data.synthetic import random_walk_universe
            data = build_dataset(_data_config(args), universe=random_walk_universe(args.days, n_tickers=args.tickers,
                                                                                  seed=0),
                                 cache_dir=args.cache, n_jobs=args.jobs)
            full = len(data.samples["train"])
            transport = "object-store"
        else:
            from stocktrend.platform.data.stream import PartitionedPanel, StreamedData, plan_stream
            panel = PartitionedPanel.open(args.root)
            data = StreamedData(panel, plan_stream(panel, _data_config(args)))
            full = data.plan.samples("train", balanced=True)
            transport = "stream"
        t_data = time.perf_counter() - t0
        rcfg = RayConfig(workers=2, storage=tempfile.mkdtemp(prefix="stream-ray-"), max_failures=0,
                         data_transport=transport)
        result, info = fit_ray(data, tcfg, model_config_for(data, args.preset, args.model), rcfg, run_test=False,
                               extra_callbacks=[EpochClock(clock_dir)])
        shutdown_ray()
    if not args.in_memory:  # the score phase's model: the checkpoint `stocktrend train` would register
        from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
        from stocktrend.platform.training.local import train_config_dict
        save_checkpoint(make_checkpoint(result.module.model, result.model_config, data, {},
                                        extra={"train_config": train_config_dict(result.train_config),
                                               "history": result.history, "finetune_from": ""}, kind=args.model),
                        Path(args.root).parent / f"model-{args.tickers}.pt")
    import shutil
    shutil.rmtree(rcfg.storage, ignore_errors=True)
    epochs = [[json.loads(line) for line in p.read_text().splitlines()] for p in Path(clock_dir).iterdir()]
    shutil.rmtree(clock_dir, ignore_errors=True)
    first = max(r[0]["first_s"] for r in epochs)  # the first epoch's wait for its first batch (pipeline start)
    ranks = [r[-1] for r in epochs]  # the last epoch: the steady state
    rows = sum(r["rows"] for r in ranks)
    slowest = max(r["s"] for r in ranks)
    steady = sum(r["steady"] for r in ranks)
    return {"transport": transport, "data_s": t_data, "fit_s": info.seconds, "epoch_s": slowest, "rows": rows,
            "first_batch_s": first, "steady_windows_per_s": steady,
            "windows_per_s": rows / slowest, "full_epoch_windows": full,
            "epochs_per_hour": 3600 * rows / slowest / full, "val_rank_ic": result.best_score,
            "rss_gb": watch.by_role()}


def _bars_dir(args) -> Path:
    return Path(args.root).parent / f"bars-{args.tickers}x{args.days}"


def phase_bars(args) -> dict:
    """The build's synthetic universe written as a user's data directory (one Parquet file per ticker, ``market/``):
    what the score phase reads, in its own process so that the score phase's memory is its own."""
    from stocktrend.platform.data.synthetic import random_walk_universe
    bars = _bars_dir(args)
    if not (bars / "_done").is_file():
        universe = random_walk_universe(args.days, n_tickers=args.tickers, seed=0)
        (bars / "market").mkdir(parents=True, exist_ok=True)
        for name, frame in universe.tickers.items():
            frame.to_parquet(bars / f"{name}.parquet")
        for name, frame in universe.market.items():
            frame.to_parquet(bars / "market" / f"{name}.parquet")
        (bars / "_done").write_text("")
    return {"dir": str(bars)}


def phase_score(args) -> dict:
    """`stocktrend score` with the Ray Data engine on the trained model, over every ticker's last ``--score-days``
    days, reading the bars as a user's data directory (``phase_bars``): the driver surveys the directory a block of
    tickers at a time, each Ray task reads its own tickers."""
    import tempfile

    from stocktrend.loop.score import ScoreOptions, score
    from stocktrend.platform.training.distributed import shutdown_ray
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    when = ({"as_of": "latest"} if args.score_days == 1 else
            {"start": str(pd_business_day(args.days - args.score_days)), "end": str(pd_business_day(args.days - 1))})
    t0 = time.perf_counter()
    with ProcessWatch() as watch:
        res = score(ScoreOptions(model=str(Path(args.root).parent / f"model-{args.tickers}.pt"),
                                 data_dir=str(_bars_dir(args)), engine="ray",
                                 out_dir=tempfile.mkdtemp(prefix="stream-scores-"), **when), say=lambda _: None)
    took = time.perf_counter() - t0
    shutdown_ray()
    frame = res["models"][0]["frame"]
    return {"score_s": took, "rows": int(len(frame)), "tickers": int(frame["ticker"].nunique()),
            "days": args.score_days, "rss_gb": watch.by_role()}


def pd_business_day(i: int):
    """The i-th day of the synthetic generator's calendar."""
    from stocktrend.platform.data.synthetic import business_days
    return business_days(i + 1)[-1].date()


def run_phase(phase: str, args, **extra) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--tickers", str(args.tickers_one),
           "--days", str(args.days), "--cache", args.cache, "--jobs", str(args.jobs), "--epoch-windows",
           str(args.epoch_windows), "--epochs", str(args.epochs), "--model", args.model, "--preset", args.preset, "--seq", str(args.seq),
           "--top-k", str(args.top_k), "--features", args.features, "--batch-size", str(args.batch_size),
           "--score-days", str(args.score_days)]
    if args.in_memory:
        cmd.append("--in-memory")
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", default="300,1000,3000")
    ap.add_argument("--days", type=int, default=3000, help="business days per ticker (3000 = 12 years)")
    ap.add_argument("--jobs", type=int, default=2, help="feature processes")
    ap.add_argument("--epoch-windows", type=int, default=100_000, help="windows of the timed epoch; 0 = all")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs; the figures are the last one's (the "
                    "first also pays the pipeline's start, shown apart)")
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq", type=int, default=30)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--features", default="standard")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--in-memory", action="store_true", help="train phase on the in-memory object-store path")
    ap.add_argument("--phases", default="build,plan,train", help="which phases to run (build always runs: the "
                    "others need its dataset; score needs train's model): build,plan,train,score")
    ap.add_argument("--score-days", type=int, default=1, help="trading days the score phase scores (the last ones)")
    ap.add_argument("--cache", default=None, help="where the partitioned datasets go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the datasets (with --cache)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per phase")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        args.tickers = int(args.tickers)
        out = {"build": phase_build, "plan": phase_plan, "train": phase_train, "score": phase_score,
               "bars": phase_bars}[args.phase](args)
        print("RESULT " + json.dumps(out), flush=True)
        return
    import shutil
    own_cache = args.cache is None
    args.cache = args.cache or tempfile.mkdtemp(prefix="stream-scale-")
    rows = []
    try:
        for n in [int(x) for x in args.tickers.split(",")]:
            args.tickers_one = n
            print(f"== {n} tickers x {args.days} days ({time.strftime('%H:%M:%S')})", flush=True)
            b = run_phase("build", args)
            print(f"   build : {b['build_s']:.0f} s ({b['rows']:,} rows x {b['features']} features; universe generated "
                  f"in {b['generate_s']:.0f} s), peak RSS {b['rss_gb']:.2f} GB (feature processes "
                  f"{b['children_rss_gb']:.2f} GB)", flush=True)
            if "plan" not in args.phases and "train" not in args.phases:
                if own_cache or not args.keep:
                    shutil.rmtree(b["root"], ignore_errors=True)
                continue
            p = run_phase("plan", args, root=b["root"])
            print(f"   plan  : {p['plan_s']:.0f} s, peak RSS {p['rss_gb']:.2f} GB; train {p['train']:,} windows "
                  f"(oversampled), val {p['val']:,}, test {p['test']:,}", flush=True)
            if "train" not in args.phases:
                if own_cache or not args.keep:
                    shutil.rmtree(b["root"], ignore_errors=True)
                continue
            t = run_phase("train", args, root=b["root"])
            roles = ", ".join(f"{k} {v:.2f}" for k, v in list(t["rss_gb"].items())[:6])
            print(f"   train : {t['transport']}, {t['rows']:,} windows in {t['epoch_s']:.0f} s = "
                  f"{t['windows_per_s']:,.0f} windows/s in the last of {args.epochs} epoch(s) (the first waited "
                  f"{t['first_batch_s']:.1f} s for its first batch) -> {t['epochs_per_hour']:.2f} full epochs/hour "
                  f"({t['full_epoch_windows']:,} windows); data {t['data_s']:.0f} s, fit {t['fit_s']:.0f} s; "
                  f"peak RSS GB: {roles}", flush=True)
            if "score" in args.phases and not args.in_memory:
                run_phase("bars", args, root=b["root"])
                sc = run_phase("score", args, root=b["root"])
                roles = ", ".join(f"{k} {v:.2f}" for k, v in list(sc["rss_gb"].items())[:6])
                print(f"   score : {sc['tickers']:,} tickers x {sc['days']} day(s) = {sc['rows']:,} predictions in "
                      f"{sc['score_s']:.0f} s (Ray Data engine, 2 CPUs); peak RSS GB: {roles}", flush=True)
            rows.append({"tickers": n, **{f"build_{k}": v for k, v in b.items()},
                         **{f"plan_{k}": v for k, v in p.items()}, **t})
            if own_cache or not args.keep:
                shutil.rmtree(b["root"], ignore_errors=True)
    finally:
        if own_cache:
            shutil.rmtree(args.cache, ignore_errors=True)
    print("\ntickers  build_s  build_GB  plan_s  plan_GB  windows/s  epochs/h  max_process_GB  transport")
    for r in rows:
        print(f"{r['tickers']:>7}  {r['build_build_s']:7.0f}  {max(r['build_rss_gb'], r['build_children_rss_gb']):8.2f}  "
              f"{r['plan_plan_s']:6.0f}  {r['plan_rss_gb']:7.2f}  "
              f"{r['windows_per_s']:9,.0f}  {r['epochs_per_hour']:8.2f}  "
              f"{max(r['rss_gb'].values()):14.2f}  {r['transport']}")


if __name__ == "__main__":
    main()
