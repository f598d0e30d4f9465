"""Self-contained checkpoints and the predictor built from them.

A checkpoint is one ``torch.save`` file of plain data: the weights plus everything needed to predict from raw prices
(model config, data config, feature config, all feature names, the selected features and the fitted scaler, label
kind, sequence length, horizon, data hash, metrics). It is always read with ``torch.load(weights_only=True)``, so a
crafted file cannot run code: anything but tensors and plain containers is refused.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from stocktrend.models.hybrid import HybridConfig, HybridNet
from stocktrend.platform.data.dataset import DataConfig, FittedTransforms, PreparedData, config_dict
from stocktrend.platform.data.features import FeatureConfig, build_features
from stocktrend.platform.data.labels import LabelKind
from stocktrend.platform.data.sources import DataValidationError

FORMAT = "stocktrend-checkpoint/1"


class UnknownTickerError(DataValidationError):
    """A ticker that the model's universe (or the model's ticker identity) does not have."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another format, or contains something other than plain data."""


def _plain(v: Any) -> Any:
    """Tuples -> lists and numpy scalars -> Python numbers, so the file holds only weights_only-safe types."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def make_checkpoint(model: torch.nn.Module, model_config: HybridConfig, data: PreparedData,
                    metrics: dict[str, float] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": model_config.to_dict(),
        "data_config": config_dict(data.config),
        "feature_config": _plain(asdict(FeatureConfig())),
        "transforms": data.transforms.to_dict(),
        "label_kind": data.config.label_kind,
        "class_names": list(data.kind.class_names),
        "sequence_length": data.seq_len,
        "horizon": data.config.horizon,
        "data_hash": data.panel.data_hash,
        "tickers": list(data.tickers),
        "metrics": _plain(metrics or {}),
        "extra": _plain(extra or {}),
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Atomic write: a crash mid-save leaves the old file (or nothing), never half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message leads with boilerplate; the informative line names the blocked global or the bad opcode.
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        detail = lines[0][:200] if lines else "unreadable pickle"
        if "GLOBAL" in detail:
            raise CheckpointError(f"{path}: refused: the file references code, not just tensors and plain data "
                                  f"({detail})") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({detail})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    return ckpt


@dataclass
class Prediction:
    probabilities: list[list[float]]  # per item, per class
    labels: list[str]
    signals: list[str]  # BUY / SELL (/ HOLD for Neutral)
    confidence: list[float]
    attention: list[list[float]] | None = None  # per item, per day of the window


class Predictor:
    """A loaded checkpoint: windows -> probabilities, or raw prices -> features -> the last window -> prediction."""

    def __init__(self, ckpt: dict[str, Any]):
        self.ckpt = ckpt
        self.config = HybridConfig.from_dict(ckpt["model_config"])
        self.model = HybridNet(self.config)
        self.model.load_state_dict(ckpt["state_dict"])
        self.model.eval()
        self.transforms = FittedTransforms.from_dict(ckpt["transforms"])
        self.kind = LabelKind(ckpt["label_kind"])
        self.class_names = list(ckpt["class_names"])
        self.seq_len = int(ckpt["sequence_length"])
        self.data_config = DataConfig(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in ckpt["data_config"].items()})
        self.feature_config = FeatureConfig(**{k: tuple(v) if isinstance(v, list) else v
                                               for k, v in ckpt["feature_config"].items()})

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        return cls(read_checkpoint(path))

    @property
    def n_features(self) -> int:
        return self.config.n_features

    def check_windows(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        """Windows as a float32 array [batch][seq_len][n_features] with finite values, or a DataValidationError."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 3 or x.shape[1] != self.seq_len or x.shape[2] != self.n_features:
            raise DataValidationError(f"windows must have shape [batch][{self.seq_len}][{self.n_features}], "
                                      f"got {list(x.shape)}")
        if not np.isfinite(x).all():
            raise DataValidationError("windows contain NaN or infinite values")
        return x

    @torch.no_grad()
    def predict_proba(self, windows: np.ndarray | torch.Tensor, batch_size: int = 512,
                      return_attention: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        x = torch.from_numpy(self.check_windows(windows))
        probs, atts = [], []
        for a in range(0, len(x), batch_size):
            out, att = self.model(x[a:a + batch_size], return_attention=True)
            probs.append(torch.softmax(out.float(), -1) if self.kind is not LabelKind.regression else out.float()[:, None])
            atts.append(att.float())
        p = torch.cat(probs).numpy()
        return p, (torch.cat(atts).numpy() if return_attention else None)

    def describe(self, probs: np.ndarray, attention: np.ndarray | None = None) -> Prediction:
        if self.kind is LabelKind.regression:
            r = probs[:, 0]
            return Prediction(probs.tolist(), ["Alcista" if v >= 0 else "Bajista" for v in r],
                              ["BUY" if v >= 0 else "SELL" for v in r], np.abs(r).tolist(),
                              attention.tolist() if attention is not None else None)
        idx = probs.argmax(1)
        labels = [self.class_names[i] for i in idx]
        signal = {"Alcista": "BUY", "Bajista": "SELL", "Neutral": "HOLD"}
        return Prediction(probs.tolist(), labels, [signal[label] for label in labels], probs.max(1).tolist(),
                          attention.tolist() if attention is not None else None)

    def features_from_prices(self, prices: pd.DataFrame, market: dict[str, pd.DataFrame] | None = None,
                             indicators: dict[str, pd.DataFrame] | None = None, ticker: str | None = None
                             ) -> np.ndarray:
        """Raw validated OHLCV (+ market series) -> the scaled, selected rows, through the training feature code.
        ``ticker`` names the series (needed by models that take the ticker's identity)."""
        feats = build_features(prices, market or {}, indicators or {}, self.feature_config, name=ticker or "request")
        missing = [n for n in self.transforms.selected if n not in feats.columns]
        if missing:
            raise DataValidationError(f"this model needs features from series that were not given: "
                                      f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if len(feats) < self.seq_len:
            raise DataValidationError(
                f"too little history: {len(feats)} usable day(s) after the {self.feature_config.warmup - 1}-day "
                f"feature warm-up; the model needs {self.seq_len} (send at least "
                f"{self.seq_len + self.feature_config.warmup - 1} days)")
        return self.transforms.transform(feats, ticker)

    def source_universe(self):
        """The universe (or data directory) this model was trained on, loaded once per Predictor: the bars behind
        predictions by ticker name."""
        if getattr(self, "_universe", None) is None:
            from stocktrend.platform.data.sources import load_universe
            cfg = self.data_config
            self._universe = load_universe(cfg.data_dir, None, list(cfg.market) if cfg.market is not None else None,
                                           list(cfg.indicators), universe=cfg.universe)
        return self._universe

    def bars_for(self, ticker: str, as_of: str | None = None, days: int | None = None
                 ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
        """A ticker's own bars up to ``as_of`` (inclusive; default: its last day), the last ``days`` of them, with the
        market and indicator series, from the model's universe. Unknown tickers and dates name what exists."""
        u = self.source_universe()
        source = f"data directory {self.data_config.data_dir}" if self.data_config.data_dir else \
            f"universe {self.data_config.universe}"
        allowed = self.transforms.tickers or list(u.tickers)
        if ticker not in u.tickers or ticker not in allowed:
            raise UnknownTickerError(f"unknown ticker {ticker!r}: this model answers for {', '.join(allowed)} "
                                     f"({source})")
        prices = u.tickers[ticker]
        first, last = prices.index[0], prices.index[-1]
        if as_of is not None:
            try:
                day = pd.Timestamp(as_of).normalize()
            except (ValueError, TypeError):
                raise DataValidationError(f"as_of {as_of!r} is not a date (use YYYY-MM-DD)") from None
            if day < first or day > last:
                raise DataValidationError(f"as_of {day.date()} is outside {ticker}'s data ({first.date()} .. "
                                          f"{last.date()})")
            prices = prices.loc[:day]
        if days is not None:
            prices = prices.iloc[-days:]
        return prices, u.market, u.indicators

    def predict_prices(self, prices: pd.DataFrame, market: dict[str, pd.DataFrame] | None = None,
                       indicators: dict[str, pd.DataFrame] | None = None, attention: bool = False,
                       ticker: str | None = None) -> Prediction:
        x = self.features_from_prices(prices, market, indicators, ticker)
        probs, att = self.predict_proba(x[None, -self.seq_len:], return_attention=attention)
        return self.describe(probs, att)
