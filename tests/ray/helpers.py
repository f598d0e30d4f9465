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


class RecordStarts(pl.Callback):
    """Appends one JSON line per (re)start of each rank: its Ray node, the first epoch it trains after starting (a
    resumed run starts after its checkpoint's epoch; ``current_epoch`` in ``on_train_start`` does not show that yet),
    the time."""

    def __init__(self, folder: str):
        self.folder = folder
        self.pending = False

    def on_train_start(self, trainer, module):
        self.pending = True

    def on_train_epoch_start(self, trainer, module):
        if not self.pending:
            return
        self.pending = False
        import json
        import time

        import ray
        line = json.dumps({"rank": trainer.global_rank, "node": ray.get_runtime_context().get_node_id(),
                           "epoch": trainer.current_epoch, "t": time.time()})
        with open(Path(self.folder, f"rank{trainer.global_rank}-{os.getpid()}"), "a") as f:
            f.write(line + "\n")


class CountRows(pl.Callback):
    """Appends, per rank and epoch, how many training windows the rank stepped on and a fingerprint of them (the
    sum of their last day's inputs, to see that ranks get different windows)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.rows, self.fingerprint = 0, 0.0

    def on_train_epoch_start(self, trainer, module):
        self.rows, self.fingerprint = 0, 0.0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows += len(batch[1])
        self.fingerprint += float(batch[0][:, -1, :].double().sum())

    def on_train_epoch_end(self, trainer, module):
        import json
        with open(Path(self.folder, f"rank{trainer.global_rank}"), "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "rows": self.rows, "fp": self.fingerprint}) + "\n")
