"""Local Lightning training of any backbone on PreparedData (Ray Train reuses these pieces in a later issue).

``fit`` builds the Trainer with the seeds' recipe (clipping 1.0, accumulation 4, early stopping with patience 15 and
the best checkpoint, both by one validation metric: ``monitor``, val_loss by default), restores the best weights at the end, and returns them with
the epoch history. The caller decides where the resulting checkpoint goes (file, MLflow registry).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from stocktrend.models import zoo
from stocktrend.models.spec import ModelSpec
from stocktrend.models.module import TrendModule
from stocktrend.models.rank_ic import MIN_NAMES
from stocktrend.platform.data.datamodule import StockDataModule
from stocktrend.platform.data.dataset import PreparedData
from stocktrend.platform.training import AVERAGE_HALFLIFE
from stocktrend.platform.training.results import FitResult
from stocktrend.platform.training.scratch import scratch_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"  # model preset (each model file's PRESETS: seed, small, tiny)
    model: str = zoo.DEFAULT_KIND  # model kind (stocktrend.models.zoo.KINDS); ``spec`` is its ModelSpec
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 64
    lr: float = 2e-4  # AdamW base learning rate (OneCycle starts here)
    max_lr: float = 1e-3  # OneCycle peak
    weight_decay: float = 5e-3
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    accumulate: int = 4  # gradient accumulation steps
    patience: int = 15  # early stopping on ``monitor``; 0 = a fixed-length run of ``epochs`` keeping the last weights
    # (a refit on every labelled day, whose validation segment is in-sample and decides nothing)
    # best-checkpoint and early-stopping metric: val_rank_ic (a panel's daily rank IC), val_loss, ...; "auto" =
    # val_rank_ic on a panel, val_loss otherwise (the command line's default, bench/README.md "val_rank_ic")
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    accelerator: str = "auto"  # auto = cuda > mps > cpu
    precision: str = "auto"  # auto = bf16-mixed on CPUs with bf16 support and on bf16 GPUs, else 32
    seed: int = 42
    progress: bool = True  # progress bar
    # > 0: an epoch trains on this many windows (a fresh random draw of the shuffled, oversampled training segment each
    # epoch; Lightning's limit_train_batches), so a search on a large panel costs per epoch what a one-ticker one does.
    # Validation always sees the whole segment. 0: every window, every epoch.
    epoch_windows: int = 0
    # > 0: validation, the kept checkpoint and the final weights use an exponential moving average of the weights with
    # this half-life in epochs (averaging.py); 0 = the raw weights
    average_halflife: float = AVERAGE_HALFLIFE

    @property
    def spec(self):
        return zoo.get(self.model)

    def resolved(self, data: PreparedData) -> "TrainConfig":
        """``monitor="auto"`` made concrete for a data set: val_rank_ic on a panel, val_loss otherwise."""
        if self.monitor != "auto":
            return self
        metric = "val_rank_ic" if data.is_panel else "val_loss"
        return replace(self, monitor=metric, monitor_mode=mode_of(metric))

    def check_monitor(self, data: PreparedData) -> None:
        """A clear error before training when the monitored metric cannot exist on this data set."""
        if self.patience <= 0:  # a fixed-length run: no checkpoint is chosen, nothing stops early
            return
        if self.monitor == "val_rank_ic" and not data.is_panel:
            raise ValueError(f"--monitor val_rank_ic needs a panel of {MIN_NAMES} or more tickers (the daily "
                             f"cross-sectional rank IC); this data set has {len(data.tickers)}: use val_loss or val_auc")
        if self.monitor_mode not in ("min", "max"):
            raise ValueError(f"monitor_mode must be min or max, got {self.monitor_mode!r}")

    def train_batch_limit(self, world_size: int = 1) -> int | None:
        """Batches per epoch (per worker) for ``epoch_windows``; None = no limit."""
        if self.epoch_windows <= 0:
            return None
        return max(1, -(-self.epoch_windows // (self.batch_size * max(1, world_size))))


MONITORS = ("auto", "val_loss", "val_rank_ic", "val_auc", "val_acc", "val_mcc", "val_f1", "val_mae", "val_dir_acc")


def mode_of(metric: str) -> str:
    """Whether a validation metric is better low (losses, errors) or high (everything else)."""
    return "min" if metric.endswith(("loss", "mae")) else "max"


def pick_accelerator(requested: str = "auto") -> str:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ValueError("--accelerator cuda requested but no CUDA device is available")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise ValueError("--accelerator mps requested but MPS is not available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_supports_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def pick_precision(accelerator: str, requested: str = "auto") -> str:
    """bf16-mixed where the hardware has fast bf16 (measured 2x on this AVX-512-BF16 CPU, bench/train_throughput.py);
    fp32 on MPS (bf16 autocast there is incomplete) and on CPUs without bf16 instructions."""
    if requested != "auto":
        return requested
    if accelerator == "cpu":
        return "bf16-mixed" if cpu_supports_bf16() else "32-true"
    if accelerator == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def model_config_for(data: PreparedData, name: str, spec: ModelSpec | str = zoo.DEFAULT_KIND,
                     input_names: list[str] | None = None, **overrides: Any):
    """A model preset sized for a data set: its input width, window, classes, and (for the models that route their
    inputs) which columns go where, chosen by feature name (``input_names``: the columns of windows built some other
    way than ``data``'s transforms)."""
    from stocktrend.platform.data.features import FeatureConfig, all_ticker_features
    spec = zoo.get(spec)
    names = list(input_names) if input_names is not None else data.transforms.input_names
    own = frozenset(all_ticker_features(FeatureConfig()))  # the ticker's own features (the rest is context)
    return spec.sized(name, data.n_features, data.seq_len, data.kind.n_classes, data.config.label_kind, names, own,
                      **overrides)


class EpochHistory(pl.Callback):
    """Keeps every epoch's metrics (for learning curves) and forwards them to an optional sink (MLflow)."""

    def __init__(self, sink=None):
        self.rows: list[dict[str, float]] = []
        self.sink = sink

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        row["epoch"] = trainer.current_epoch
        self.rows.append(row)
        if self.sink is not None:
            self.sink(row, trainer.current_epoch)


def build_trainer(tcfg: TrainConfig, callbacks: list[pl.Callback], workdir: Path, **extra: Any) -> pl.Trainer:
    from stocktrend.platform import console
    console.reroute()  # Lightning's own console handler (GPU/TPU banners, tips) goes to the command's log file
    accelerator = pick_accelerator(tcfg.accelerator)
    return pl.Trainer(
        max_epochs=tcfg.epochs, accelerator=accelerator, devices=1, precision=pick_precision(accelerator,
                                                                                           tcfg.precision),
        gradient_clip_val=tcfg.grad_clip, accumulate_grad_batches=tcfg.accumulate, callbacks=callbacks,
        default_root_dir=str(workdir), logger=False, enable_progress_bar=tcfg.progress, enable_model_summary=False,
        deterministic=False, num_sanity_val_steps=0, limit_train_batches=tcfg.train_batch_limit(), **extra)


def fit(data: PreparedData, tcfg: TrainConfig | None = None, model_config: Any = None,
        callbacks: list[pl.Callback] | None = None, init_state_dict: dict[str, torch.Tensor] | None = None,
        metric_sink=None, run_test: bool = True, datamodule: pl.LightningDataModule | None = None) -> FitResult:
    """Train locally; returns the module with the best validation checkpoint restored.

    ``datamodule`` replaces the lazy windows of ``data`` (the leakage audit passes the seeds' random split); class
    weights still come from ``data``'s unbalanced training segment."""
    tcfg = tcfg or TrainConfig()
    spec = tcfg.spec
    pl.seed_everything(tcfg.seed, workers=True, verbose=False)
    tcfg = tcfg.resolved(data)
    tcfg.check_monitor(data)
    if datamodule is not None and tcfg.monitor == "val_rank_ic" and tcfg.patience > 0:
        raise ValueError("--monitor val_rank_ic needs the data set's own windows (a custom data module's batches carry "
                         "no days to rank): use val_loss")
    mcfg = model_config or model_config_for(data, tcfg.preset, spec)
    n_classes = data.kind.n_classes if spec.task(data.config.label_kind).predicts_classes else 0
    if mcfg.n_features != data.n_features or mcfg.n_classes != n_classes:
        raise ValueError(f"model expects {mcfg.n_features} features / {mcfg.n_classes} classes, data has "
                         f"{data.n_features} / {n_classes}")
    if spec.is_sklearn:
        from stocktrend.platform.training.sklearn_fit import fit_sklearn
        return fit_sklearn(data, tcfg, mcfg, run_test=run_test)
    module = make_module(data, tcfg, mcfg)
    if init_state_dict is not None:
        module.model.load_state_dict(init_state_dict)
    dm = datamodule or data_module(data, tcfg)
    history = EpochHistory(metric_sink)
    with scratch_dir() as tmp:  # named by this process; folders of killed fits are swept (scratch.py)
        # a weights-only checkpoint skips the callbacks' on_save_checkpoint, where the weight average puts the averaged
        # weights in its state_dict: with averaging the checkpoint is whole (it is still loaded weights_only below)
        ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp, monitor=tcfg.monitor, mode=tcfg.monitor_mode, save_top_k=1,
                                            save_weights_only=tcfg.average_halflife <= 0, filename="best")
        fixed = tcfg.patience <= 0
        early = [] if fixed else [early_stopping(tcfg)]
        trainer = build_trainer(tcfg, [*averaging(tcfg), *([] if fixed else [ckpt]), *early, history,
                                       *(callbacks or [])], Path(tmp))
        trainer.fit(module, datamodule=dm)
        best_epoch = trainer.current_epoch - 1 if fixed else None
        if not fixed and ckpt.best_model_path:
            # weights_only: even our own temporary checkpoint is loaded without unpickling arbitrary objects.
            state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
            best_epoch = int(state.get("epoch", -1))
        best = float(ckpt.best_model_score) if not fixed and ckpt.best_model_score is not None else None
        test_metrics: dict[str, float] = {}
        if run_test:
            out = trainer.test(module, datamodule=dm, verbose=False)
            test_metrics = {k: float(v) for k, v in (out[0] if out else {}).items()}
    module.eval()
    return FitResult(module, mcfg, tcfg, best, best_epoch, trainer.current_epoch, history.rows, test_metrics)


def early_stopping(tcfg: TrainConfig) -> pl.callbacks.EarlyStopping:
    """Stop after ``patience`` epochs without a better ``monitor`` (the metric the best checkpoint is chosen by)."""
    return pl.callbacks.EarlyStopping(monitor=tcfg.monitor, mode=tcfg.monitor_mode, patience=tcfg.patience)


def averaging(tcfg: TrainConfig) -> list[pl.Callback]:
    """The weight-averaging callback ``average_halflife`` asks for (before the checkpoint and early stopping)."""
    if tcfg.average_halflife <= 0:
        return []
    from stocktrend.platform.training.averaging import EpochEMA
    return [EpochEMA(tcfg.average_halflife)]


def make_module(data: PreparedData, tcfg: TrainConfig, mcfg) -> TrendModule:
    """The LightningModule for a torch model of the zoo on this data set (class weights from its training segment)."""
    return TrendModule(mcfg.to_dict(), class_weights=data.class_weights().tolist() if mcfg.n_classes else None,
                       lr=tcfg.lr, weight_decay=tcfg.weight_decay, max_lr=tcfg.max_lr,
                       label_smoothing=tcfg.label_smoothing, model_kind=tcfg.model, label_kind=data.config.label_kind)


def data_module(data: PreparedData, tcfg: TrainConfig) -> StockDataModule:
    """Batches for the model's task (multi-task models also get each window's forward return); a streamed data set
    (``data.stream.StreamedData``) gets its streaming data module."""
    from stocktrend.platform.data.stream import StreamedData
    from stocktrend.platform.data.stream_ingest import stream_data_module
    if isinstance(data, StreamedData):
        return stream_data_module(data, tcfg.batch_size, seed=tcfg.seed,
                                  with_return=tcfg.spec.task(data.config.label_kind).is_multitask)
    return StockDataModule(data, batch_size=tcfg.batch_size,
                           with_return=tcfg.spec.task(data.config.label_kind).is_multitask)


def test_metrics_of(module: TrendModule, data: PreparedData, tcfg: TrainConfig) -> dict[str, float]:
    """The test-segment metrics of trained weights, computed the same way as at the end of ``fit``."""
    with tempfile.TemporaryDirectory(prefix="stocktrend-test-") as tmp:
        trainer = build_trainer(replace(tcfg, progress=False), [], Path(tmp))
        out = trainer.test(module, datamodule=data_module(data, tcfg), verbose=False)
    module.eval()
    return {k: float(v) for k, v in (out[0] if out else {}).items()}


def train_config_dict(tcfg: TrainConfig) -> dict[str, Any]:
    return asdict(tcfg)
