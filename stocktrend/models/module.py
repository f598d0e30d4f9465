"""The training "system" around any torch model of the zoo: loss, optimiser, schedule and metrics, one shared step for
all stages.

Recipe (the seeds'): AdamW (lr 2e-4, weight decay 5e-3), OneCycleLR up to 1e-3 over the whole run; gradient clipping
(1.0) and accumulation (4) are Trainer settings (``stocktrend.platform.training.local``). Losses by task:
- classification: CrossEntropy with class weights and label smoothing 0.1 (accuracy, F1, AUC, MCC, confusion);
- regression: the Gaussian negative log-likelihood when the model predicts a variance (lstm_transformer), else the
  Huber loss; MAE and directional accuracy;
- multitask (mtl_lstm): focal loss on the action head + Huber on the return head, weighted ``cls_weight`` :
  ``reg_weight`` (the seed's 20 : 50); the classification metrics plus the return head's MAE.
On panels (3 or more tickers) the validation and test segments also report the daily cross-sectional rank IC of the
score against the realised forward return (``val_rank_ic``, ``test_rank_ic``; ``stocktrend.models.rank_ic``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn

from stocktrend.models import zoo
from stocktrend.models.rank_ic import DailyRankIC, score_from_output


def classification_metrics(n_classes: int) -> torchmetrics.MetricCollection:
    task = "binary" if n_classes == 2 else "multiclass"
    kw: dict[str, Any] = {"task": task} if task == "binary" else {"task": task, "num_classes": n_classes}
    avg = {} if task == "binary" else {"average": "macro"}
    return torchmetrics.MetricCollection({
        "acc": torchmetrics.Accuracy(**kw),
        "f1": torchmetrics.F1Score(**kw, **avg),
        "auc": torchmetrics.AUROC(**kw, **avg),
        "mcc": torchmetrics.MatthewsCorrCoef(**kw),
    })


class TrendModule(pl.LightningModule):
    def __init__(self, model_config: dict[str, Any], class_weights: list[float] | None = None, lr: float = 2e-4,
                 weight_decay: float = 5e-3, max_lr: float = 1e-3, label_smoothing: float = 0.1,
                 pct_start: float = 0.3, model_kind: str = "hybrid", label_kind: str = "binary"):
        super().__init__()
        self.save_hyperparameters()
        self.kind = model_kind
        self.spec = zoo.get(model_kind)  # hyperparameters stay plain data (the name); the spec is looked up once
        self.cfg = self.spec.config_from_dict(model_config)
        self.model = self.spec.build(self.cfg)
        self.task = self.spec.task(label_kind)
        self.n_classes = self.cfg.n_classes
        self.register_buffer("class_weight", torch.tensor(class_weights, dtype=torch.float32)
                             if class_weights is not None and self.n_classes else torch.zeros(0), persistent=False)
        self.huber = nn.HuberLoss(delta=0.02)
        stages = ("train", "val", "test")
        if self.task.predicts_classes:
            self.ce = nn.CrossEntropyLoss(weight=self.class_weight if len(self.class_weight) else None,
                                          label_smoothing=label_smoothing)
            metrics = classification_metrics(self.n_classes)
            self.confusion = nn.ModuleDict({f"{s}_m": torchmetrics.ConfusionMatrix(
                task="binary" if self.n_classes == 2 else "multiclass", num_classes=self.n_classes)
                for s in ("val", "test")})
        else:
            metrics = torchmetrics.MetricCollection({"mae": torchmetrics.MeanAbsoluteError()})
        self.loss_fn = self.ce if self.task.is_classification else self.huber  # the plain per-batch loss
        # Keys like "train" would clash with nn.Module.train, so the collections are keyed "<stage>_m".
        self.metrics = nn.ModuleDict({f"{s}_m": metrics.clone(prefix=f"{s}_") for s in stages})
        if self.task.is_multitask:
            self.ret_mae = nn.ModuleDict({f"{s}_m": torchmetrics.MeanAbsoluteError() for s in stages})
        # Evaluation batches of a panel carry (day, forward return): the daily rank IC of the score (val_rank_ic)
        self.rank_ic = nn.ModuleDict({f"{s}_m": DailyRankIC() for s in ("val", "test")})
        self.last_confusion: dict[str, list[list[int]]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)

    def _loss(self, out: dict[str, torch.Tensor], y: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        if self.task.is_classification:
            return self.ce(out["logits"].float(), y)
        if self.task.is_regression:
            if "log_var" in out:  # mean and variance, in the model's scaled units (return x scale) for conditioning
                s = float(self.cfg.return_scale)
                mu, log_var = out["ret"].float() * s, out["log_var"].float() + 2 * torch.log(torch.tensor(s))
                if getattr(self.cfg, "mean_loss", "nll") == "nll":  # joint Gaussian NLL (seed 003)
                    return (0.5 * (log_var + (y * s - mu) ** 2 / log_var.exp())).mean()
                # The mean by Huber, as every regressor; the variance by the NLL around the detached mean. The joint
                # NLL scales each sample's pull on the mean by 1/variance, so the net can explain a weak signal away
                # as noise (bench/README: the lstm_transformer's efficiency with each loss).
                mean = nn.functional.huber_loss(mu, y * s, delta=self.huber.delta * s)
                return mean + (0.5 * (log_var + (y * s - mu.detach()) ** 2 / log_var.exp())).mean()
            return self.huber(out["ret"].float(), y)
        from stocktrend.models.mtl_lstm import focal_loss
        cfg = self.cfg
        w = self.class_weight if len(self.class_weight) else None
        cls = focal_loss(out["logits"], y, cfg.focal_gamma, w)
        reg = self.huber(out["ret"].float() * cfg.return_scale, r * cfg.return_scale)
        return (cfg.cls_weight * cls + cfg.reg_weight * reg) / (cfg.cls_weight + cfg.reg_weight)

    def _shared_step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        x, y, *rest = batch
        # rest: the forward return (multi-task models), then (day, forward return) rows on a panel's evaluation
        # segments (2-D; StockDataModule's with_day)
        meta = rest.pop() if rest and rest[-1].ndim == 2 else None
        r = rest[0] if rest else None
        out = self.model.outputs(x)
        loss = self._loss(out, y, r)
        if meta is not None and f"{stage}_m" in self.rank_ic:
            if self.task.is_regression:
                score = score_from_output(out["ret"].float(), 0)
            else:
                score = score_from_output(self.probabilities(out["logits"]), self.n_classes)
            self.rank_ic[f"{stage}_m"].update(score, meta[:, 0], meta[:, 1])
            self.log(f"{stage}_rank_ic", self.rank_ic[f"{stage}_m"], on_step=False, on_epoch=True,
                     prog_bar=stage == "val", batch_size=len(y))
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train", on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(y))
        if self.task.predicts_classes:
            probs = self.probabilities(out["logits"])
            self.metrics[f"{stage}_m"].update(probs[:, 1] if self.n_classes == 2 else probs, y)
            if f"{stage}_m" in self.confusion:
                self.confusion[f"{stage}_m"].update(probs.argmax(-1), y)
            if self.task.is_multitask:
                self.ret_mae[f"{stage}_m"].update(out["ret"].float(), r)
                self.log(f"{stage}_ret_mae", self.ret_mae[f"{stage}_m"], on_step=False, on_epoch=True,
                         batch_size=len(y))
        else:
            self.metrics[f"{stage}_m"].update(out["ret"].float(), y)
            self.log(f"{stage}_dir_acc", ((out["ret"] > 0) == (y >= 0)).float().mean(), on_step=False,
                     on_epoch=True, sync_dist=True, batch_size=len(y))
        self.log_dict(self.metrics[f"{stage}_m"], on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def _end_confusion(self, stage: str) -> None:
        if self.task.predicts_classes:
            self.last_confusion[stage] = self.confusion[f"{stage}_m"].compute().cpu().tolist()
            self.confusion[f"{stage}_m"].reset()

    def on_validation_epoch_end(self) -> None:
        self._end_confusion("val")

    def on_test_epoch_end(self) -> None:
        self._end_confusion("test")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.max_lr, total_steps=total,
                                                    pct_start=hp.pct_start, div_factor=hp.max_lr / hp.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
