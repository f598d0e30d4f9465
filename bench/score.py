"""`stocktrend score` on Ray Data against a plain single-process loop, side by side in one run.

    python bench/score.py --universe us29 --start 2012-08-01 --end 2013-07-31
    python bench/score.py --synthetic 500 --days 520 --start-offset 260
    python bench/score.py --synthetic 40 --days 400 --start-offset 300 --repeats 3   # where in-process wins

A small model (lstm, small preset, trained for one capped epoch: scoring cost does not depend on how good it is) is
trained on the panel and saved as a checkpoint file; then the same range is scored by the local engine (features
and inference ticker after ticker in this process) and by the Ray Data engine with 1 and 2 inference actors, each
repeated, in one process with one Ray instance (its start-up is reported once, not per run). Prints rows/s and wall
time (medians over repeats) and checks that every engine wrote the same scores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universe", default=None, help="a named universe (e.g. us29)")
    ap.add_argument("--synthetic", type=int, default=0, help="a random-walk panel of N tickers instead")
    ap.add_argument("--days", type=int, default=520, help="synthetic: days per ticker")
    ap.add_argument("--start", default=None)
    ap.add_argument("--end", default=None)
    ap.add_argument("--start-offset", type=int, default=260, help="synthetic: first scored day (index)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--engines", default="local,ray")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    home = tempfile.mkdtemp(prefix="bench-score-")
    os.environ["STOCKTREND_HOME"] = home
    import logging
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import pandas as pd

    from stocktrend.loop.score import ScoreOptions, read_scores, score
    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
    from stocktrend.platform.training.local import TrainConfig, fit, model_config_for

    t0 = time.perf_counter()
    if args.synthetic:
        from stocktrend.platform.data.synthetic import random_walk_universe, write_directory
        u = random_walk_universe(args.days, n_tickers=args.synthetic, seed=0)
        data_dir = write_directory(u, Path(home) / "data")
        cfg = DataConfig(data_dir=data_dir)
        dates = u.tickers["RW0"].index
        start, end = str(dates[args.start_offset].date()), str(dates[-1].date())
    else:
        cfg = DataConfig(universe=args.universe)
        start, end = args.start, args.end
    data = build_dataset(cfg, n_jobs=2)
    t_data = time.perf_counter() - t0
    tcfg = TrainConfig(preset="small", model="lstm", epochs=1, epoch_windows=2048, progress=False)
    res = fit(data, tcfg, model_config_for(data, "small", "lstm"), run_test=False)
    ckpt = save_checkpoint(make_checkpoint(res.module.model, res.model_config, data, kind="lstm"),
                           Path(home) / "model.pt")
    print(f"panel: {len(data.tickers)} tickers, {len(data.x):,} feature rows; data {t_data:.1f} s; scoring "
          f"{start} .. {end}")

    import ray
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s (once, not in the figures below)")
    runs = []
    for engine in args.engines.split(","):
        for actors in ([int(a) for a in args.actors.split(",")] if engine == "ray" else [0]):
            times = []
            for _ in range(args.repeats):
                out = Path(home) / f"scores-{engine}-{actors}"
                r = score(ScoreOptions(model=str(ckpt), data_dir=cfg.data_dir, universe=cfg.universe, start=start,
                                       end=end, engine=engine, actors=actors, out_dir=str(out)), say=lambda _: None)
                times.append(r["seconds"])
            runs.append({"engine": engine if engine == "local" else f"ray, {actors} actor(s)",
                         "rows": r["rows"], "wall_s": statistics.median(times), "all_s": times, "out": out})
    ray.shutdown()
    base = read_scores(runs[0]["out"], "model", "model").sort_values(["as_of", "ticker"]).reset_index(drop=True)
    print(f"\n{'engine':<22}{'rows':>10}{'wall s (median)':>18}{'rows/s':>10}{'vs local':>10}   runs")
    for r in runs:
        other = read_scores(r["out"], "model", "model").sort_values(["as_of", "ticker"]).reset_index(drop=True)
        same = len(other) == len(base) and np.allclose(other.filter(like="p_").to_numpy(),
                                                       base.filter(like="p_").to_numpy(), atol=1e-5)
        print(f"{r['engine']:<22}{r['rows']:>10,}{r['wall_s']:>18.1f}{r['rows'] / r['wall_s']:>10,.0f}"
              f"{runs[0]['wall_s'] / r['wall_s']:>9.2f}x   {', '.join(f'{t:.1f}' for t in r['all_s'])}"
              f"{'' if same else '  (SCORES DIFFER)'}")
    print(f"\nhome: {home}")


if __name__ == "__main__":
    main()
