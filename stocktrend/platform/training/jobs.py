"""End-to-end jobs the CLI calls: train (or fine-tune) -> checkpoint -> MLflow run + registered version."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stocktrend.platform.registry import mlflow_registry as registry
from stocktrend.platform.data.cache import default_home
from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint, save_checkpoint
from stocktrend.platform.data.dataset import DataConfig, PreparedData, build_dataset, config_dict
from stocktrend.platform.training.distributed import tickers_label
from stocktrend.platform.training.local import TrainConfig, fit, model_config_for, train_config_dict
from stocktrend.platform.training.results import FitResult

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    fit: FitResult
    data: PreparedData
    checkpoint_path: Path
    run_id: str | None
    model_name: str | None
    version: int | None
    seconds: float
    transport: str | None = None  # how --data-transport auto chose, and why


def resolve_model(spec: str, dst: str | Path | None = None) -> tuple[Path, dict[str, Any] | None]:
    """A checkpoint file path, or a registry reference NAME[@ALIAS|@VERSION] -> local checkpoint path."""
    p = Path(spec)
    if p.suffix in (".pt", ".ckpt") or p.is_file():
        return p, None
    name, ref = registry.parse_spec(spec)
    return registry.download(name, ref, dst)


def train_job(data_cfg: DataConfig, train_cfg: TrainConfig, model_name: str | None = registry.DEFAULT_MODEL,
              register: bool = True, finetune_from: str | None = None, finetune_lr_factor: float = 0.1,
              model_overrides: dict[str, Any] | None = None, data: PreparedData | None = None,
              ray_config: Any = None, model_config: Any = None, first_takes_production: bool = True,
              run_name: str | None = None, tags: dict[str, str] | None = None,
              extra: dict[str, Any] | None = None) -> TrainOutcome:
    """Train locally, or on Ray workers when ``ray_config`` (a raytrain.RayConfig) is given, then (by default) log the
    run to MLflow and register the best checkpoint. Both paths share the module, data module and checkpoint code.
    ``extra``: more plain data for the checkpoint's ``extra`` (lineage, e.g. a refit's gated version).

    ``model_config``: train this architecture (a retrain of a registered model) instead of the preset sized for the
    data; ``first_takes_production=False`` registers without giving a first version the production alias."""
    t0 = time.perf_counter()
    init_state = None
    base_info = None
    if ray_config is not None and train_cfg.spec.is_sklearn:
        raise ValueError(f"{train_cfg.model} is a scikit-learn model and trains in one process: drop --workers")
    if finetune_from:
        # Fine-tuning (the seeds' usage #2): same architecture and features as the base model, lower learning rate.
        base_path, base_info = resolve_model(finetune_from)
        base = Predictor.load(base_path)
        if base.spec.is_sklearn:
            raise ValueError(f"{finetune_from} is a {base.model_kind} model: scikit-learn models are refitted, not "
                             f"fine-tuned")
        train_cfg = replace(train_cfg, model=base.model_kind)
        data_cfg = replace(base.data_config, **{k: getattr(data_cfg, k) for k in ("tickers", "data_dir")})
        init_state = base.model.state_dict()
        train_cfg = replace(train_cfg, lr=train_cfg.lr * finetune_lr_factor, max_lr=train_cfg.max_lr * finetune_lr_factor)
    data_cfg = replace(data_cfg, label_kind=train_cfg.spec.label_for(data_cfg.label_kind))
    universe, transport_note = None, None
    if ray_config is not None and ray_config.data_transport == "auto" and data is None:
        from stocktrend.platform.data import transport
        from stocktrend.platform.data.universes import config_universe
        from stocktrend.platform.data.features import feature_set
        universe = config_universe(data_cfg)
        choice = transport.choose(universe, feature_set(data_cfg.features), finetune=bool(finetune_from),
                                  ticker_id=bool(data_cfg.ticker_id))
        transport_note = f"{choice.transport}: {choice.reason}"
        log.info("data transport %s", transport_note)
        ray_config = replace(ray_config, data_transport=choice.transport)
    streaming = ray_config is not None and ray_config.data_transport == "stream"
    if streaming and finetune_from:
        raise ValueError("--finetune is not available with --data-transport stream yet: fine-tune with the default "
                         "transport")
    if data is None and streaming:  # partitioned features and a streamed fit: no process holds the panel
        import os
        from stocktrend.platform.data.stream import build_streamed, open_streamed
        data = (open_streamed(universe, data_cfg, None, os.cpu_count() or 1) if universe is not None
                else build_streamed(data_cfg, n_jobs=os.cpu_count() or 1))
    data = data or build_dataset(data_cfg, universe=universe)
    universe = None  # the raw bars are not kept for the fit
    if finetune_from:
        # Keep the base model's inputs: its first layer was trained on those features, in that order, on that scale
        # (and, with --ticker-id, that ticker encoding).
        log.info("fine-tuning keeps the base model's %d selected features and its scaler",
                 len(base.transforms.selected))
        data = data.with_transforms(base.transforms)
    train_cfg = train_cfg.resolved(data)  # --monitor auto: val_rank_ic on a panel, val_loss otherwise
    if finetune_from:
        mcfg = base.config
    elif model_config is not None:
        mcfg = model_config
    else:
        mcfg = model_config_for(data, train_cfg.preset, train_cfg.spec, **(model_overrides or {}))
    params = {**{f"data.{k}": v for k, v in config_dict(data.config).items()},
              **{f"train.{k}": v for k, v in train_config_dict(train_cfg).items()},
              **{f"model.{k}": v for k, v in mcfg.to_dict().items()},
              "data.hash": data.panel.data_hash, "finetune_from": finetune_from or ""}
    run_name = run_name or (f"{'finetune' if finetune_from else 'train'}-{train_cfg.model}-{train_cfg.preset}-"
                            f"{tickers_label(data.tickers)}")
    if ray_config is not None:
        params.update({f"ray.{k}": v for k, v in vars(ray_config).items()})
        run_name = f"ray{ray_config.workers}-{run_name}"

    def run_fit(sink=None) -> FitResult:
        if ray_config is None:
            return fit(data, train_cfg, mcfg, init_state_dict=init_state, metric_sink=sink)
        from stocktrend.platform.training.distributed import fit_ray
        nonlocal transport_note
        result, info = fit_ray(data, train_cfg, mcfg, ray_config, init_state_dict=init_state)
        log.info("Ray Train run stored at %s (best checkpoint %s)", info.storage_path, info.best_checkpoint_dir)
        if info.reads is not None:  # the streaming path: where the training blocks were read
            transport_note = f"{transport_note or 'stream'}; {info.reads.summary()}"
            if sink is not None:
                import mlflow
                mlflow.log_metrics({"ray.stream_blocks": info.reads.blocks, "ray.stream_local_blocks": info.reads.local})
        if sink is not None:
            for row in result.history:
                sink(row, int(row.get("epoch", 0)))
        return result

    if not register:
        result = run_fit()
        path = save_checkpoint(_ckpt(result, data, finetune_from, extra), default_home() / "models" / "last" / "model.pt")
        return TrainOutcome(result, data, path, None, None, None, time.perf_counter() - t0, transport_note)
    with registry.tracked_run(run_name, params, tags=tags) as run:
        result = run_fit(registry.log_epoch_metrics)
        import mlflow
        mlflow.log_metrics({k: v for k, v in result.test_metrics.items()})
        if result.best_score is not None:
            mlflow.log_metric(f"best_{train_cfg.monitor}", result.best_score)
        ckpt = _ckpt(result, data, finetune_from, extra)
        path = save_checkpoint(ckpt, default_home() / "models" / run.info.run_id / registry.CHECKPOINT_FILE)
        version = registry.register_checkpoint(path, run.info.run_id, model_name or registry.DEFAULT_MODEL,
                                               ckpt["metrics"], description=run_name, ckpt=ckpt,
                                               first_takes_production=first_takes_production)
    return TrainOutcome(result, data, path, run.info.run_id, model_name, version, time.perf_counter() - t0,
                        transport_note)


def _ckpt(result: FitResult, data: PreparedData, finetune_from: str | None, extra: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    metrics = {**result.test_metrics, "best_epoch": result.best_epoch or -1, "epochs_run": result.epochs_run}
    if result.best_score is not None:
        metrics[f"best_{result.train_config.monitor}"] = result.best_score
    return make_checkpoint(result.module.model, result.model_config, data, metrics,
                           extra={"train_config": train_config_dict(result.train_config), "history": result.history,
                                  "finetune_from": finetune_from or "", **(extra or {})},
                           kind=result.train_config.model)

