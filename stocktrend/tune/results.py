"""What a search leaves: the trial table, the best trial's checkpoint, the console summary."""
from __future__ import annotations

from typing import Any

import pandas as pd

from stocktrend.tune.options import SearchOptions


def trial_table(grid, opts: SearchOptions) -> pd.DataFrame:
    from stocktrend.tune.trial import LAST_RUN
    interrupted = LAST_RUN.get("unfinished_dirs")
    restarts = LAST_RUN.get("restarts", {})
    rows = []
    for order, r in enumerate(grid):
        df = r.metrics_dataframe
        epochs = int(df["training_iteration"].max()) if df is not None and len(df) else 0
        best, extra = None, {}
        if df is not None and opts.metric in df and df[opts.metric].notna().any():
            at = df[opts.metric].idxmin() if opts.mode == "min" else df[opts.metric].idxmax()
            best = float(df.loc[at, opts.metric])
            # what panel users judge a model by, at the epoch the search ranked the trial by
            if opts.metric != "val_rank_ic" and "val_rank_ic" in df:
                extra["val_rank_ic"] = float(df.loc[at, "val_rank_ic"])
        status = "error" if r.error else ("stopped early" if epochs < opts.max_epochs else "completed")
        if interrupted and r.path.rstrip("/").rsplit("/", 1)[-1] in interrupted:
            status = "interrupted"
        trial_id = r.metrics.get("trial_id") if r.metrics else None
        rows.append({"order": order, "trial_id": trial_id, **(r.config or {}),
                     f"best_{opts.metric}": best, **extra, "epochs": epochs, "stopped_early": status == "stopped early",
                     "status": status, "restarts": int(restarts.get(trial_id, 0)),
                     "error": str(r.error).splitlines()[0][:200] if r.error else ""})
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
              + (" (offered to production through the gate)" if opts.promote else ""))


def register_best(grid, best, best_ckpt, table: pd.DataFrame, opts: SearchOptions, panel, data_config, out_dir,
                  best_config: dict[str, Any], bounds=None) -> tuple[int, Any]:
    """Every trial as a nested MLflow run under the search's run, and the best trial's weights re-expressed as a
    self-contained stocktrend checkpoint, registered as an MLflow Model. Returns (version, checkpoint path)."""
    from dataclasses import replace
    from pathlib import Path

    import mlflow
    import torch

    from stocktrend.platform.training import AVERAGE_HALFLIFE
    from stocktrend.platform.data.cache import default_home
    from stocktrend.platform.data.stream import prepare_any
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
    from stocktrend.tune.space import trial_model, trial_model_config

    with registry.tracked_run(f"search-{opts.name}", {f"search.{k}": v for k, v in vars(opts).items()
                                                      if k != "extra_points"}) as parent:
        for r in grid:  # every trial as a nested run: params, per-epoch metrics, status
            with mlflow.start_run(run_name=f"trial-{r.path.rsplit('/', 1)[-1][:40]}", nested=True):
                mlflow.log_params({k: v for k, v in r.config.items()})
                df = r.metrics_dataframe
                if df is not None:
                    for _, row in df.iterrows():
                        mlflow.log_metrics({k: float(row[k]) for k in df.columns
                                            if k.startswith(("val_", "train_")) and pd.notna(row[k])},
                                           step=int(row["training_iteration"]))
                mlflow.set_tag("status", "error" if r.error else "ok")
        mlflow.log_artifact(str(out_dir / "trials.csv"))
        spec, _ = trial_model(best.config, opts.specs)
        data = prepare_any(panel, replace(data_config, sequence_length=int(best.config["sequence_length"]),
                                          top_k=int(best.config["top_k"]),
                                          label_kind=spec.label_for(data_config.label_kind)), bounds)
        spec, mcfg = trial_model_config(data, opts.preset, best.config, opts.specs)
        with best_ckpt.as_directory() as d:
            if spec.is_sklearn:
                from stocktrend.models.sklearn_base import SklearnNet, loads
                from stocktrend.tune.trial import SKLEARN_FILE
                model = SklearnNet(loads((Path(d) / SKLEARN_FILE).read_bytes()))
            else:
                saved = torch.load(Path(d) / "checkpoint.ckpt", map_location="cpu", weights_only=True)
                state = saved["state_dict"]
                # the network the trial trained, as its checkpoint records it (a search resumed across a change of
                # the presets, e.g. the hybrid's last_day_skip, must not rebuild a different one)
                stored = (saved.get("hyper_parameters") or {}).get("model_config")
                if stored:
                    mcfg = spec.config_from_dict(stored)
                model = spec.build(mcfg)
                model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        best_value = float(table.iloc[0][f"best_{opts.metric}"])
        ckpt = make_checkpoint(model, mcfg, data, {f"best_{opts.metric}": best_value},
                               extra={"search": opts.name, "trial_config": best_config,
                                      "search_metric": opts.metric, "average_halflife": AVERAGE_HALFLIFE}, kind=spec)
        path = save_checkpoint(ckpt, default_home() / "models" / parent.info.run_id / registry.CHECKPOINT_FILE)
        mlflow.log_metric(f"best_{opts.metric}", best_value)
        version = registry.register_checkpoint(path, parent.info.run_id, opts.model_name, ckpt["metrics"],
                                               description=f"search {opts.name} ({spec.kind})", ckpt=ckpt)
    return version, path
