"""LightningDataModule over PreparedData: train (oversampled, shuffled), val and test loaders of lazy windows.

Under DDP (local or Ray Train) Lightning swaps the training sampler for a DistributedSampler, so each worker sees a
distinct shard of the training windows.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from stocktrend.platform.data.dataset import PreparedData, WindowDataset


class StockDataModule(pl.LightningDataModule):
    def __init__(self, data: PreparedData, batch_size: int = 64, num_workers: int = 0, eval_batch_size: int = 256,
                 with_return: bool = False, with_day: bool | None = None):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        # with_return: batches also carry the forward return (multi-task models regress it beside the class)
        # with_day (default: panels of MIN_NAMES or more tickers): evaluation batches carry (day, forward return) for
        # the daily rank IC (val_rank_ic, test_rank_ic)
        self.with_day = data.is_panel if with_day is None else with_day
        self.datasets = {seg: WindowDataset(data, rows, with_return, with_day=self.with_day and seg != "train")
                         for seg, rows in data.samples.items()}

    def _loader(self, seg: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(self.datasets[seg], batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)


class ArrayDataModule(pl.LightningDataModule):
    """Materialised windows per segment (the leakage audit trains on the seeds' random split this way)."""

    def __init__(self, segments: dict[str, tuple[np.ndarray, np.ndarray]], batch_size: int = 64,
                 eval_batch_size: int = 256):
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.datasets = {s: TensorDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                                          torch.from_numpy(y.astype(np.int64))) for s, (x, y) in segments.items()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["test"], batch_size=self.eval_batch_size)
