"""Callbacks shipped to Ray workers by value (they are not part of the package)."""

import os
from pathlib import Path

import lightning.pytorch as pl


class CrashOnce(pl.Callback):
    """Kills rank 0's process at the end of ``epoch`` the first time only (a marker file remembers)."""

    def __init__(self, marker: str, epoch: int = 1):
        self.marker, self.epoch = marker, epoch

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == self.epoch and trainer.global_rank == 0 and not Path(self.marker).exists():
            Path(self.marker).write_text("crashed")
            os._exit(1)


class RecordNode(pl.Callback):
    """Writes the Ray node id of every rank into a folder (to check worker placement)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_start(self, trainer, module):
        import ray
        Path(self.folder, f"rank{trainer.global_rank}").write_text(ray.get_runtime_context().get_node_id())
