"""The training "system" around any backbone: loss, optimiser, schedule and metrics, one shared step for all stages.

Recipe (the seeds'): CrossEntropy with class weights and label smoothing 0.1, AdamW (lr 2e-4, weight decay 5e-3),
OneCycleLR up to 1e-3 over the whole run. Gradient clipping (1.0) and accumulation (4) are Trainer settings, applied in
``stocktrend.platform.training.local``. Regression models use the Huber loss and report MAE and directional accuracy.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn

from stocktrend.models.hybrid import HybridConfig, HybridNet


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
                 pct_start: float = 0.3):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = HybridConfig.from_dict(model_config)
        self.model = HybridNet(self.cfg)
        self.n_classes = self.cfg.n_classes
        if self.n_classes > 0:
            w = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
            self.loss_fn: nn.Module = nn.CrossEntropyLoss(weight=w, label_smoothing=label_smoothing)
            metrics = classification_metrics(self.n_classes)
            self.confusion = nn.ModuleDict({f"{s}_m": torchmetrics.ConfusionMatrix(
                task="binary" if self.n_classes == 2 else "multiclass", num_classes=self.n_classes)
                for s in ("val", "test")})
        else:
            self.loss_fn = nn.HuberLoss(delta=0.02)
            metrics = torchmetrics.MetricCollection({"mae": torchmetrics.MeanAbsoluteError()})
        # Keys like "train" would clash with nn.Module.train, so the collections are keyed "<stage>_m".
        self.metrics = nn.ModuleDict({f"{s}_m": metrics.clone(prefix=f"{s}_") for s in ("train", "val", "test")})
        self.last_confusion: dict[str, list[list[int]]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        out = self(x)
        loss = self.loss_fn(out.float(), y)
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train", on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(y))
        if self.n_classes > 0:
            probs = self.probabilities(out)
            self.metrics[f"{stage}_m"].update(probs[:, 1] if self.n_classes == 2 else probs, y)
            if f"{stage}_m" in self.confusion:
                self.confusion[f"{stage}_m"].update(probs.argmax(-1), y)
        else:
            self.metrics[f"{stage}_m"].update(out.float(), y)
            self.log(f"{stage}_dir_acc", ((out > 0) == (y >= 0)).float().mean(), on_step=False, on_epoch=True,
                     sync_dist=True, batch_size=len(y))
        self.log_dict(self.metrics[f"{stage}_m"], on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def _end_confusion(self, stage: str) -> None:
        if self.n_classes > 0:
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
