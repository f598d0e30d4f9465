"""Data-platform throughput: synthetic panel -> features + labels + split + transforms + windows.

    python bench/data_pipeline.py [--tickers 500] [--days 5000] [--jobs 2] [--cache]

Prints wall time per stage, rows/s and peak RSS. Asserts nothing about time (benchmarks print figures).
Target (issue 2): 500 tickers x 5,000 days under 60 s and 4 GB on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time



def peak_rss_gb() -> tuple[float, float]:
    """(this process, largest finished child process) peak resident set size in GB (ru_maxrss is KiB on Linux)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickers", type=int, default=500)
    ap.add_argument("--days", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", action="store_true", help="also write the Parquet feature cache (timed)")
    args = ap.parse_args()

    from stocktrend.platform.data.cache import load_or_build_panel
    from stocktrend.platform.data.dataset import DataConfig, prepare
    from stocktrend.platform.data.synthetic import random_walk_universe

    t0 = time.perf_counter()
    universe = random_walk_universe(args.days, n_tickers=args.tickers, seed=0)
    t_gen = time.perf_counter() - t0
    rows_in = args.tickers * args.days

    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        panel = load_or_build_panel(universe, cache_dir=tmp, use_cache=args.cache, n_jobs=args.jobs)
        t_feat = time.perf_counter() - t1
        del universe
        t2 = time.perf_counter()
        data = prepare(panel, DataConfig(tickers=()))
        view = data.window_view()
        batch = data.windows(data.samples["train"][:4096])  # materialise one big batch to prove the windows work
        t_rest = time.perf_counter() - t2
    total = t_feat + t_rest
    self_gb, child_gb = peak_rss_gb()
    print(f"panel            : {args.tickers} tickers x {args.days} days = {rows_in:,} input rows "
          f"(generated in {t_gen:.1f} s, not counted)")
    print(f"features         : {t_feat:6.1f} s  ({len(panel.feature_names)} features, {len(panel.meta):,} rows "
          f"after warm-up, {args.jobs} process(es), cache {'written' if args.cache else 'off'})")
    print(f"labels+split+fit : {t_rest:6.1f} s  (train {len(data.samples['train']):,} windows after oversampling, "
          f"val {len(data.samples['val']):,}, test {len(data.samples['test']):,}; window view {view.shape}, "
          f"batch {batch.shape})")
    print(f"total            : {total:6.1f} s  -> {rows_in / total:,.0f} input rows/s")
    print(f"peak RSS         : {self_gb:.2f} GB main process, {child_gb:.2f} GB largest worker process")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
