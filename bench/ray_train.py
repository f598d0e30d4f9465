"""Ray Train overhead and scaling: local Lightning vs Ray Train with 1 and 2 workers, same data, model and epochs.

    python bench/ray_train.py [--preset small] [--epochs 4] [--batch 64]

Data: the embedded MSFT universe (real prices). Every run trains ``--epochs`` epochs (early stopping off) with
accumulation 1. Epoch time is measured on the (rank-0) worker from train-epoch start to validation end, so start-up
and checkpoint upload are excluded from samples/s and reported separately as overhead seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import lightning.pytorch as pl
import torch


class EpochTimer(pl.Callback):
    """Epoch wall time; also put in callback_metrics so Ray Train's report carries it to the driver."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self.t0 = time.perf_counter()

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        dt = time.perf_counter() - self.t0
        self.times.append(dt)
        trainer.callback_metrics["train_epoch_seconds"] = torch.tensor(dt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    from stocktrend.platform.data.dataset import build_dataset
    from stocktrend.platform.training.distributed import RayConfig, fit_ray, init_ray
    from stocktrend.platform.training.local import TrainConfig, fit, model_config_for

    data = build_dataset()
    n_train = len(data.samples["train"]) + len(data.samples["val"])  # each epoch trains and validates
    tcfg = TrainConfig(preset=args.preset, epochs=args.epochs, batch_size=args.batch, accumulate=1,
                       patience=10_000, progress=False)
    mcfg = model_config_for(data, args.preset)
    rows = []

    timer = EpochTimer()
    t0 = time.perf_counter()
    fit(data, tcfg, mcfg, callbacks=[timer], run_test=False)
    wall = time.perf_counter() - t0
    rows.append(("local Lightning (2 threads)", wall, timer.times))

    t0 = time.perf_counter()
    init_ray(num_cpus=os.cpu_count())
    ray_init = time.perf_counter() - t0
    for workers in (1, 2):
        t0 = time.perf_counter()
        res, _ = fit_ray(data, tcfg, mcfg, RayConfig(workers=workers, max_failures=0, run_name=f"bench-{workers}w-"
                                                     f"{int(time.time())}"), extra_callbacks=[EpochTimer()],
                         run_test=False)
        wall = time.perf_counter() - t0
        rows.append((f"Ray Train, {workers} worker(s) x 1 CPU", wall,
                     [r["train_epoch_seconds"] for r in res.history]))

    print(f"preset {args.preset}, {args.epochs} epochs, batch {args.batch}, {n_train} windows per epoch "
          f"(train {len(data.samples['train'])} + val {len(data.samples['val'])}); ray.init {ray_init:.1f} s")
    print(f"{'run':<32} {'wall s':>7} {'median epoch s':>15} {'samples/s':>10} {'overhead s':>11}")
    base = None
    for name, wall, times in rows:
        med = statistics.median(times[1:] if len(times) > 1 else times)
        sps = n_train / med
        base = base or sps
        overhead = wall - sum(times)
        print(f"{name:<32} {wall:7.1f} {med:15.2f} {sps:10.1f} {overhead:11.1f}   ({sps / base:.2f}x local)")


if __name__ == "__main__":
    main()
