"""What a search leaves: the trial table, the best trial's checkpoint, the console summary."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from stocktrend.tune.search import SearchOptions


def trial_table(grid, opts: SearchOptions) -> pd.DataFrame:
    from stocktrend.tune.trial import LAST_RUN
    interrupted = LAST_RUN.get("unfinished_dirs")
    rows = []
    for order, r in enumerate(grid):
        df = r.metrics_dataframe
        epochs = int(df["training_iteration"].max()) if df is not None and len(df) else 0
        best = None
        if df is not None and opts.metric in df:
            best = float(df[opts.metric].min() if opts.mode == "min" else df[opts.metric].max())
        status = "error" if r.error else ("stopped early" if epochs < opts.max_epochs else "completed")
        if interrupted and r.path.rstrip("/").rsplit("/", 1)[-1] in interrupted:
            status = "interrupted"
        rows.append({"order": order, "trial_id": r.metrics.get("trial_id") if r.metrics else None, **r.config,
                     f"best_{opts.metric}": best, "epochs": epochs, "stopped_early": status == "stopped early",
                     "status": status, "error": str(r.error).splitlines()[0][:200] if r.error else ""})
        if status == "interrupted":
            rows[-1]["stopped_early"] = False
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(f"best_{opts.metric}", ascending=opts.mode == "min", na_position="last")
    return table.reset_index(drop=True)


def best_checkpoint(grid, opts: SearchOptions, storage: str):
    """The best trial and its best epoch's checkpoint (a ray.train.Checkpoint on the storage's filesystem: a local
    directory, or a bucket path when the storage is a URI such as s3://)."""
    from ray.train import Checkpoint
    best = grid.get_best_result(metric=opts.metric, mode=opts.mode, scope="all")
    if opts.in_process:  # the trial reported its checkpoints to Tune, which kept the best one
        ckpt = best.get_best_checkpoint(opts.metric, opts.mode)
        if ckpt is None:
            raise RuntimeError(f"the best trial ({best.path}) kept no checkpoint")
        return best, ckpt
    df = best.metrics_dataframe
    row = df.loc[df[opts.metric].idxmin() if opts.mode == "min" else df[opts.metric].idxmax()]
    fs = None
    if "://" in storage:
        import pyarrow.fs
        fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
    return best, Checkpoint(str(row["checkpoint_path"]), filesystem=fs)


def print_summary(res: dict[str, Any], opts: SearchOptions) -> None:
    cols = [c for c in res["table"].columns if c not in ("order", "trial_id", "error")]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(res["table"][cols].to_string(index=False))
    n_early = int(res["table"]["stopped_early"].sum())
    print(f"\n{len(res['table'])} trials in {res['seconds']:.0f} s ({n_early} stopped early by ASHA); "
          f"table: {res['table_path']}")
    print(f"best config: {res['best_config']}")
    if res["version"]:
        print(f"registered: {opts.model_name} version {res['version']}"
              + (" (promoted to production)" if opts.promote else ""))
