"""An exponential moving average of the weights, sized in epochs (Lightning's ``WeightAveraging`` callback).

At weak signal strengths a panel's validation rank IC wanders from epoch to epoch by more than the signal moves it, so
the epoch the best checkpoint keeps is chosen largely by noise (bench/README.md, "Is that the bench's short training?").
Averaging the weights over the last part of an epoch smooths both the model and the metric that picks it. Lightning's
callback validates, checkpoints and ends the fit with the averaged weights (its ``on_save_checkpoint`` puts them in the
checkpoint's ``state_dict``; the raw ones go to ``current_model_state``, so a resumed Ray Train run keeps both).

The decay is set when training starts from the optimizer steps in an epoch, so one half-life means the same share of
an epoch whatever the batch size, gradient accumulation, epoch cap (``epoch_windows``) or number of workers.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import WeightAveraging


class EpochEMA(WeightAveraging):
    """EMA of every floating-point parameter and buffer (integer buffers keep their current value), updated after each
    optimizer step, half-life ``halflife`` epochs."""

    def __init__(self, halflife: float):
        if not halflife > 0:
            raise ValueError(f"the weight average's half-life must be > 0 epochs, got {halflife}")
        self.halflife = float(halflife)
        self.decay = 0.0  # set in on_train_start; 0 until then = the average is the current weights
        super().__init__(avg_fn=self._average)

    def _average(self, averaged, current, num_averaged):
        if not averaged.is_floating_point():  # index buffers (dual_tower's towers, lstm_transformer's static inputs),
            return current  # batch counters: the current value, never a mean truncated back to an integer
        return averaged * self.decay + current * (1.0 - self.decay)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.decay = decay_for(self.halflife, trainer.num_training_batches, trainer.accumulate_grad_batches)


def decay_for(halflife: float, batches: float, accumulate: int) -> float:
    """The per-step decay whose weight halves after ``halflife`` epochs of ``batches`` batches (optimizer steps =
    batches / accumulate; an unknown or infinite count, as an iterable without a length, counts as 100 steps)."""
    steps = batches / max(1, accumulate) if 0 < batches < float("inf") else 100.0
    return 0.5 ** (1.0 / max(1.0, halflife * steps))
