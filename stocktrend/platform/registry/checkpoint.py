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

from stocktrend.models import zoo
from stocktrend.models.spec import ModelSpec
from stocktrend.platform.data.dataset import DataConfig, FittedTransforms, PreparedData, config_dict
from stocktrend.platform.data.features import FeatureConfig, build_features, feature_set
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


def make_checkpoint(model: Any, model_config: Any, data: PreparedData, metrics: dict[str, float] | None = None,
                    extra: dict[str, Any] | None = None, kind: str | ModelSpec = zoo.DEFAULT_KIND) -> dict[str, Any]:
    """Everything needed to predict, as plain data. ``model`` is a torch network of the zoo, or (``rf`` / ``gbm``) a
    SklearnNet whose estimator is stored as skops bytes (a uint8 tensor: no pickle anywhere in the file). Regression
    models also get their confidence calibrated on the validation segment here (see ``calibrate``)."""
    spec = zoo.get(kind)
    ckpt = {
        "format": FORMAT,
        "model_kind": spec.kind,
        "state_dict": {} if spec.is_sklearn else
        {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": model_config.to_dict(),
        "data_config": config_dict(data.config),
        "feature_config": _plain(asdict(feature_set(data.config.features))),
        "transforms": data.transforms.to_dict(),
        "label_kind": data.config.label_kind,
        "class_names": list(data.kind.class_names),
        "sequence_length": data.seq_len,
        "horizon": data.config.horizon,
        "data_hash": data.panel.data_hash,
        "tickers": list(data.tickers),
        # first and last sample date per segment: what the model saw (train, val), for scoring it on other data later
        "segment_dates": {seg: list(data.date_range(seg)) for seg in ("train", "val", "test")
                          if _segment_size(data, seg)},
        "metrics": _plain(metrics or {}),
        "extra": _plain(extra or {}),
    }
    if spec.is_sklearn:
        from stocktrend.models.sklearn_base import dumps
        ckpt["sklearn"] = torch.frombuffer(bytearray(dumps(model.estimator)), dtype=torch.uint8).clone()
    if spec.task(data.config.label_kind).is_regression:
        ckpt["calibration"] = calibrate(Predictor(ckpt), data)
    ckpt["reference"] = drift_reference(Predictor(ckpt), data)
    return ckpt


def _segment_size(data: Any, seg: str) -> int:
    """Samples in a segment of a PreparedData or a streamed data set (``data.stream.StreamedData``)."""
    plan = getattr(data, "plan", None)
    return plan.samples(seg) if plan is not None else len(data.samples[seg])


def drift_reference(pred: "Predictor", data: PreparedData, max_windows: int = 20_000) -> dict[str, Any]:
    """What drift monitors compare served traffic with: each model input's decile bins on the training rows, and the
    class mix and confidence of the model's own predictions on the validation segment (``platform.data.reference``).
    A streamed data set contributes a bounded sample read ticker by ticker (``stream.reference_sample``)."""
    from stocktrend.platform.data.reference import CONFIDENCE_EDGES, feature_reference, prediction_reference
    if getattr(data, "plan", None) is not None:
        from stocktrend.platform.data.stream import reference_sample
        windows, _, train_x = reference_sample(data, max_windows)
        train_rows = np.arange(len(train_x))
    else:
        rows = data.samples["val"]
        if len(rows) > max_windows:
            rows = np.sort(np.random.default_rng(0).choice(rows, max_windows, replace=False))
        windows = data.windows(rows)
        train_x, train_rows = data.x, data.train_unbalanced
    out, _ = pred.predict_proba(windows) if len(windows) else (np.zeros((0, len(pred.output_names))), None)
    d = pred.describe(out) if len(out) else None
    return {"features": feature_reference(train_x, train_rows, data.transforms.input_names),
            "predictions": prediction_reference(out, d.labels if d else [], np.asarray(d.confidence if d else []),
                                                pred.class_names or ["Bajista", "Alcista"], CONFIDENCE_EDGES)}


def calibrate(pred: "Predictor", data: PreparedData) -> dict[str, float]:
    """Confidence of a regression model = P(the predicted direction is right), a logistic fit of "sign right" on the
    predicted |return| / predicted std (or |return| without a variance head), on the validation segment."""
    from sklearn.linear_model import LogisticRegression
    if getattr(data, "plan", None) is not None:  # a streamed data set: a bounded sample of validation windows
        from stocktrend.platform.data.stream import reference_sample
        windows, target, _ = reference_sample(data, max_rows=0)
    else:
        rows = data.samples["val"]
        windows, target = data.windows(rows), data.target_value[rows]
    raw = pred.raw_outputs(windows)
    z = _z(raw)
    hit = (np.sign(raw["ret"]) == np.sign(target)).astype(int)
    if len(np.unique(hit)) < 2:
        return {"a": 0.0, "b": float(np.log(max(hit.mean(), 1e-3) / max(1 - hit.mean(), 1e-3)))}
    lr = LogisticRegression(C=1.0).fit(z[:, None], hit)
    return {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def _z(raw: dict[str, np.ndarray]) -> np.ndarray:
    r = np.abs(raw["ret"].astype(np.float64))
    return r / np.exp(0.5 * raw["log_var"].astype(np.float64)) if "log_var" in raw else r * 100.0


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
    predicted_return: list[float] | None = None  # regression and multi-task models


class Predictor:
    """A loaded checkpoint: windows -> probabilities, or raw prices -> features -> the last window -> prediction."""

    def __init__(self, ckpt: dict[str, Any]):
        try:
            self._load(ckpt)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as exc:
            # A file of the right format with missing or odd fields (hand-edited, truncated, from another version).
            raise CheckpointError(f"the checkpoint is malformed ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'})") from None

    def _load(self, ckpt: dict[str, Any]) -> None:
        self.ckpt = ckpt
        self.model_kind = ckpt.get("model_kind", zoo.DEFAULT_KIND)
        self.spec = zoo.get(self.model_kind)
        self.config = self.spec.config_from_dict(ckpt["model_config"])
        if self.spec.is_sklearn:
            from stocktrend.models.sklearn_base import SklearnNet, UnsafeModelFile, loads
            try:
                self.model = SklearnNet(loads(ckpt["sklearn"].numpy().tobytes()))
            except UnsafeModelFile as exc:
                raise CheckpointError(str(exc)) from None
        else:
            self.model = self.spec.build(self.config)
            self.model.load_state_dict(ckpt["state_dict"])
            self.model.eval()
        self.transforms = FittedTransforms.from_dict(ckpt["transforms"])
        self.kind = LabelKind(ckpt["label_kind"])
        self.task = self.spec.task(self.kind.value)
        self.calibration = ckpt.get("calibration", {"a": 0.0, "b": 0.0})
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

    @property
    def output_names(self) -> list[str]:
        """Columns of ``predict_proba``'s output: class probabilities, then ``return`` (and ``confidence`` for
        regression models)."""
        if self.task.is_regression:
            return ["return", "confidence"]
        return [*self.class_names, *(["return"] if self.task.is_multitask else [])]

    @property
    def has_attention(self) -> bool:
        return self.spec.attention

    @torch.no_grad()
    def raw_outputs(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """The network's own outputs (logits, ret, log_var, attention; probs for scikit-learn) as numpy arrays."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if self.spec.is_sklearn:
            return self.model.outputs(x)
        return {k: v.float().numpy() for k, v in self.model.outputs(torch.from_numpy(x)).items()}

    def post(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Raw outputs -> the output matrix (``output_names``): softmax, calibrated confidence. Every backend
        (torch, ONNX Runtime) ends here, so they differ only in how the network runs."""
        cols = []
        if "probs" in raw:
            cols.append(raw["probs"].astype(np.float32))
        elif "logits" in raw:  # torch's softmax whatever ran the network: identical to a plain torch forward
            cols.append(torch.softmax(torch.from_numpy(np.asarray(raw["logits"], dtype=np.float32)), -1).numpy())
        if "ret" in raw:
            cols.append(raw["ret"].astype(np.float32)[:, None])
            if self.task.is_regression:
                c = self.calibration
                cols.append((1 / (1 + np.exp(-(c["a"] * _z(raw) + c["b"])))).astype(np.float32)[:, None])
        return np.concatenate(cols, axis=1)

    def predict_proba(self, windows: np.ndarray | torch.Tensor, batch_size: int = 512,
                      return_attention: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Windows -> the output matrix (class probabilities for classifiers; see ``output_names``) and, for models
        with attention, the per-day weights."""
        x = self.check_windows(windows)
        outs, atts = [], []
        for a in range(0, len(x), batch_size):
            raw = self.raw_outputs(x[a:a + batch_size])
            outs.append(self.post(raw))
            if "attention" in raw:
                atts.append(raw["attention"])
        att = np.concatenate(atts) if return_attention and atts else None
        return np.concatenate(outs), att

    def output_matrix(self, p: Prediction) -> np.ndarray:
        """A Prediction back to the output matrix (what describe() reads)."""
        if self.task.is_regression:
            return np.column_stack([p.predicted_return, p.confidence]).astype(np.float32)
        cols = [np.asarray(p.probabilities, dtype=np.float32)]
        if self.task.is_multitask:
            cols.append(np.asarray(p.predicted_return, dtype=np.float32)[:, None])
        return np.concatenate(cols, axis=1)

    def describe(self, out: np.ndarray, attention: np.ndarray | None = None) -> Prediction:
        """The output matrix -> labels, BUY/SELL/HOLD signals and confidences (regression: the sign of the predicted
        return and its calibrated confidence; multi-task: the action head's class and the predicted return)."""
        att = attention.tolist() if attention is not None else None
        signal = {"Alcista": "BUY", "Bajista": "SELL", "Neutral": "HOLD"}
        if self.task.is_regression:
            r, conf = out[:, 0], out[:, 1]
            labels = ["Alcista" if v >= 0 else "Bajista" for v in r]
            return Prediction([[] for _ in r], labels, [signal[lb] for lb in labels], conf.tolist(), att,
                              r.tolist())
        k = len(self.class_names)
        probs = out[:, :k]
        labels = [self.class_names[i] for i in probs.argmax(1)]
        return Prediction(probs.tolist(), labels, [signal[lb] for lb in labels], probs.max(1).tolist(), att,
                          out[:, k].tolist() if self.task.is_multitask else None)

    def features_from_prices(self, prices: pd.DataFrame, market: dict[str, pd.DataFrame] | None = None,
                             indicators: dict[str, pd.DataFrame] | None = None, ticker: str | None = None
                             ) -> np.ndarray:
        """Raw validated OHLCV (+ market series) -> the scaled, selected rows, through the training feature code.
        ``ticker`` names the series (needed by models that take the ticker's identity)."""
        feats = build_features(prices, market or {}, indicators or {}, self.feature_config, name=ticker or "request")
        if len(feats) and len(prices) and feats.index[-1] != prices.index[-1]:
            # The context series (market, indicators) do not cover the last bar: the prediction would be for an
            # earlier day than the one asked for.
            ends = {k: v.index[-1].date() for k, v in {**(market or {}), **(indicators or {})}.items() if len(v)}
            raise DataValidationError(
                f"the last bar ({prices.index[-1].date()}) has no market/indicator data on that day (the model's "
                f"context series end at {', '.join(f'{k} {d}' for k, d in ends.items())}); predictions need them "
                f"on the last day: pass bars (or as_of) up to {min(ends.values()) if ends else 'their last day'}")
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
            from stocktrend.platform.data.universes import load_universe
            cfg = self.data_config
            # The tickers the model was trained on (a --ticker subset loads only those; () = every ticker), with every
            # bar the source has today: a model trained on the data as of some day answers for the days after it.
            self._universe = load_universe(cfg.data_dir, list(cfg.tickers) or None,
                                           list(cfg.market) if cfg.market is not None else None,
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
        context = [*u.market.values(), *u.indicators.values()]
        if context:  # predictions need the context series on the last day: the last day they all cover
            last = min(last, *(c.index[-1] for c in context if len(c)))
        if as_of is None:
            prices = prices.loc[:last]
        else:
            try:
                day = pd.Timestamp(as_of).normalize()
            except (ValueError, TypeError):
                raise DataValidationError(f"as_of {as_of!r} is not a date (use YYYY-MM-DD)") from None
            if day < first or day > last:
                raise DataValidationError(f"as_of {day.date()} is outside {ticker}'s data ({first.date()} .. "
                                          f"{last.date()}): the days it and its market context both cover")
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
