"""Training throughput: the Lightning loop vs a plain PyTorch loop on the same model and batches, fp32 vs bf16.

    python bench/train_throughput.py [--presets small,seed] [--steps 20] [--warmup 3] [--batch 64] [--repeats 3]

Both loops do the same work per step: forward, CrossEntropy (class weights, label smoothing), torchmetrics updates,
backward, gradient clipping 1.0, AdamW + OneCycleLR step. Runs are interleaved (lightning/plain, fp32/bf16, repeated) and the median
samples/s of each is printed with the ratios. Goals (issue 3): Lightning overhead under 5%, bf16 >= 1.8x fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def batches(n: int, batch: int, seq: int, feats: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, seq, feats, generator=g), torch.randint(0, 2, (batch,), generator=g))
            for _ in range(n)]


def plain_loop(cfg_dict: dict, data: list, precision: str, warmup: int) -> float:
    from stocktrend.models.module import TrendModule
    torch.manual_seed(0)
    module = TrendModule(cfg_dict, class_weights=[1.0, 1.0])
    model, loss_fn = module.model.train(), module.loss_fn
    metrics = module.metrics["train_m"]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=5e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=len(data))
    bf16 = precision == "bf16-mixed"
    t0 = None
    for i, (x, y) in enumerate(data):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = loss_fn(out.float(), y)
        # The same metric work as TrendModule's shared step, so only the framework differs.
        metrics.update(torch.softmax(out.detach().float(), -1)[:, 1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    metrics.compute()
    return (len(data) - warmup) * len(data[0][1]) / (time.perf_counter() - t0)


def lightning_loop(cfg_dict: dict, data: list, precision: str, warmup: int) -> float:
    import lightning.pytorch as pl

    from stocktrend.models.module import TrendModule

    class Timer(pl.Callback):
        t0 = None

        def on_train_batch_start(self, trainer, module, batch, idx):
            if idx == warmup:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.t1 = time.perf_counter()

    torch.manual_seed(0)
    module = TrendModule(cfg_dict, class_weights=[1.0, 1.0])
    timer = Timer()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, precision=precision, gradient_clip_val=1.0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    loader = torch.utils.data.DataLoader(data, batch_size=None)  # the same pre-built batches, no collation
    trainer.fit(module, train_dataloaders=loader)
    return (len(data) - warmup) * len(data[0][1]) / (timer.t1 - timer.t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="small,seed")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from stocktrend.models.hybrid import HybridNet, count_parameters, preset
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.steps - args.warmup} timed steps x {args.repeats} repeats (medians)")
    for name in args.presets.split(","):
        cfg = preset(name, n_features=50, seq_len=30, n_classes=2)
        data = batches(args.steps, args.batch, 30, 50)
        runs: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):
            for precision in ("32-true", "bf16-mixed"):
                for loop, fn in (("plain", plain_loop), ("lightning", lightning_loop)):
                    runs.setdefault((loop, precision), []).append(fn(cfg.to_dict(), data, precision, args.warmup))
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"\npreset {name} ({count_parameters(HybridNet(cfg)):,} parameters), samples/s:")
        for (loop, precision), v in sorted(med.items()):
            print(f"  {loop:<9} {precision:<10} {v:8.1f}   (runs: {', '.join(f'{x:.1f}' for x in runs[(loop, precision)])})")
        for precision in ("32-true", "bf16-mixed"):
            over = 1 - med[("lightning", precision)] / med[("plain", precision)]
            print(f"  Lightning overhead {precision}: {over:+.1%}")
        for loop in ("plain", "lightning"):
            print(f"  bf16 / fp32 speed-up ({loop}): {med[(loop, 'bf16-mixed')] / med[(loop, '32-true')]:.2f}x")


if __name__ == "__main__":
    main()
