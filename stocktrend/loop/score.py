"""``stocktrend score``: what the registered model(s) say for every ticker of a universe on every trading day of a range.

The bars are read a block of tickers at a time (``stocktrend.loop.score_source``): the driver surveys the source for
the dates and the data hash, then each block reads its own tickers again (a Ray task per block on Ray Data), so no
process holds the bars of more than one block (1,024 tickers; a source of one block is kept whole for the local
engine). The work is two stages, on Ray Data or, for small jobs, in this process (the same functions either way):
1. **features, one block per ticker**: the ticker's bars (up to the last scored day, nothing later) go through the
   training feature code once for the whole range, then through each model's fitted scaler and selection, and every
   scored day's window is cut from that matrix (``ticker_windows``; on Ray Data the block carries the rows the
   windows span, ``ticker_rows``, and the windows are cut in the inference actor: 1/seq_len of the data to ship);
2. **inference**: ``map_batches`` with a callable class that loads each model once per actor, on ONNX Runtime where
   the model allows it (``stocktrend.platform.registry.inference``), with as many threads as the actor has CPUs (``Scorer``).
Champion and challenger are scored in one pass: the features are built once, each model gets its own windows.

Output: ``$STOCKTREND_HOME/scores/<name>/v<version>/as_of=<YYYY-MM-DD>/scores.parquet``, one file per model and day
(ticker, as_of, class probabilities or the predicted return, label, signal, confidence, model, version, data hash).
Each file is written under a temporary name and renamed over the old one, so re-running a day replaces that day's
partition and nothing else, and a run killed at any point leaves every partition either as it was or complete.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from stocktrend.loop import score_source
from stocktrend.platform.data.sources import DataValidationError, Universe, as_of_day

log = logging.getLogger(__name__)

SCORES_DIR = "scores"
PARTITION_FILE = "scores.parquet"
# Up to this many ticker-days the job runs in this process: Ray Data's start-up and scheduling cost more than they
# save. Measured on 2 cores (bench/score.py, bench/README.md): us29 over a year (7,250) 2.6 s in process vs ~10 s on
# Ray Data; 500 tickers over a year (130,000) about even (21.5 s vs 20.6 s with 2 actors). --engine ray overrides.
LOCAL_MAX_TICKER_DAYS = 100_000
ENGINES = ("auto", "ray", "local")
LATEST = "latest"  # --as-of latest: the last trading day in the data


@dataclass(frozen=True)
class ScoreOptions:
    model: str = "stocktrend@production"  # NAME, NAME@ALIAS, NAME@VERSION or a checkpoint file
    challenger: str | None = None  # scored in the same pass, into its own version's folder
    universe: str | None = None  # default: the model's own universe (or data directory)
    data_dir: str | None = None
    as_of: str | None = None  # one day ...
    start: str | None = None  # ... or a range of days (both ends included)
    end: str | None = None
    engine: str = "auto"  # auto | ray | local
    actors: int = 0  # inference actors (0 = one per CPU of the cluster)
    backend: str = "onnx"  # inference backend (falls back to torch with the reason logged)
    address: str | None = None  # Ray cluster (default: RAY_ADDRESS or a private local instance)
    out_dir: str | None = None  # default $STOCKTREND_HOME/scores


@dataclass
class ScoredModel:
    """A model to score with: where its checkpoint is and what it is."""

    ref: str
    name: str
    version: int | None
    path: str
    pred: Any  # Predictor (loaded in the driver for its configs; actors load their own)

    @property
    def pinned(self) -> tuple[str, str]:
        """(checkpoint path, NAME@VERSION): actors on the driver's node read the downloaded file, others resolve the
        pinned version in the registry (reachable there, as for Serve replicas); an alias could move meanwhile."""
        return self.path, (f"{self.name}@{self.version}" if self.version is not None else self.path)

    @property
    def folder(self) -> str:
        return f"v{self.version}" if self.version is not None else Path(self.path).stem


def resolve(ref: str) -> ScoredModel:
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.jobs import resolve_model
    path, info = resolve_model(ref)
    name = ref.partition("@")[0] if info else Path(ref).stem
    return ScoredModel(ref, name, int(info["version"]) if info else None, str(path), Predictor.load(path))


def comparable(champion: Any, challenger: Any, who: str = "challenger") -> None:
    """A challenger must answer the same question as the champion: same label, horizon and task, trained on the same
    tickers. Kinds may differ (hybrid vs lstm both give class probabilities)."""
    a, b = champion.ckpt, challenger.ckpt
    diffs = []
    if a["label_kind"] != b["label_kind"]:
        diffs.append(f"label {b['label_kind']} vs {a['label_kind']}")
    if int(a["horizon"]) != int(b["horizon"]):
        diffs.append(f"horizon {b['horizon']} vs {a['horizon']} days")
    if champion.task != challenger.task:
        diffs.append(f"it predicts {challenger.task} ({challenger.model_kind}) vs {champion.task} "
                     f"({champion.model_kind})")
    if sorted(a["tickers"]) != sorted(b["tickers"]):
        diffs.append(f"tickers {', '.join(b['tickers'][:5])} vs {', '.join(a['tickers'][:5])}")
    if diffs:
        raise DataValidationError(f"the {who} cannot be compared with the champion: {'; '.join(diffs)}")


def last_common_day(u: Universe) -> pd.Timestamp:
    """The last day that the tickers and every market/indicator series all reach."""
    _, last = u.date_range()
    context = [*u.market.values(), *u.indicators.values()]
    return min(last, *(c.index[-1] for c in context if len(c))) if context else last


def scoring_days(u: Universe, as_of: str | None, start: str | None, end: str | None) -> tuple[pd.Timestamp,
                                                                                                pd.Timestamp]:
    """The requested range as (first, last) day, checked against the data; errors name the data's range."""
    if as_of is not None and (start is not None or end is not None):
        raise DataValidationError("give --as-of DAY or --start D0 --end D1, not both")
    if as_of is None and (start is None or end is None):
        raise DataValidationError("give --as-of DAY, or --start D0 and --end D1")
    lo, hi = (as_of_day(as_of),) * 2 if as_of is not None else (as_of_day(start), as_of_day(end))
    if lo > hi:
        raise DataValidationError(f"--start {lo.date()} is after --end {hi.date()}")
    first, _ = u.date_range()
    last = last_common_day(u)
    if lo > last or hi < first:
        raise DataValidationError(f"{'--as-of' if as_of else 'the range'} {lo.date()}"
                                  f"{'' if lo == hi else f' .. {hi.date()}'} is outside the data ({first.date()} .. "
                                  f"{last.date()}, the days the tickers and their market context cover)")
    return lo, hi


def ticker_windows(frame: pd.DataFrame, market: dict, indicators: dict, feature_config: dict,
                   models: list[dict[str, Any]], lo: pd.Timestamp, hi: pd.Timestamp) -> dict[str, np.ndarray]:
    """One ticker's block: its features once for the whole history up to ``hi``, then each model's windows ending on
    every scored day in [lo, hi] (days before the feature warm-up or the first full window are skipped)."""
    ticker, days, pos, inputs = _inputs_of(frame, market, indicators, feature_config, models, lo, hi)
    out: dict[str, np.ndarray] = {"ticker": np.full(len(pos), ticker, dtype=object), "as_of": days}
    for i, (m, x) in enumerate(zip(models, inputs)):
        view = np.lib.stride_tricks.sliding_window_view(x, m["seq_len"], axis=0).transpose(0, 2, 1)
        out[f"x_{i}"] = np.ascontiguousarray(view[pos - m["seq_len"] + 1])
    return out


def ticker_rows(frame: pd.DataFrame, market: dict, indicators: dict, feature_config: dict,
                models: list[dict[str, Any]], lo: pd.Timestamp, hi: pd.Timestamp) -> dict[str, np.ndarray]:
    """``ticker_windows`` without cutting the windows: one row per ticker holding, per model, the input rows that its
    windows ending on the scored days span (scored days + seq_len - 1 rows), and the scored days. The windows overlap
    seq_len times over, so cutting them where inference runs (``Scorer``) ships 1/seq_len of the data through Ray's
    object store. No scored day: a block of 0 rows."""
    ticker, days, pos, inputs = _inputs_of(frame, market, indicators, feature_config, models, lo, hi)
    if not len(pos):
        return {"ticker": np.array([], dtype=object), "as_of": np.array([], dtype=object),
                **{f"rows_{i}": np.array([], dtype=object) for i in range(len(models))}}
    out = {"ticker": np.array([ticker], dtype=object), "as_of": _one(days.astype("datetime64[ns]").astype(np.int64))}
    for i, (m, x) in enumerate(zip(models, inputs)):
        out[f"rows_{i}"] = _one(np.ascontiguousarray(x[pos[0] - m["seq_len"] + 1: pos[-1] + 1], dtype=np.float32))
    return out


def _one(a: np.ndarray) -> np.ndarray:
    """A 1-element object array holding ``a`` (a variable-shaped cell for Ray Data)."""
    cell = np.empty(1, dtype=object)
    cell[0] = a
    return cell


def _inputs_of(frame, market, indicators, feature_config, models, lo, hi):
    """(ticker, scored days, their positions, each model's scaled and selected input matrix over the whole history):
    the features are built once for all models."""
    from stocktrend.platform.data.dataset import FittedTransforms
    from stocktrend.platform.data.features import FeatureConfig, build_features
    ticker = str(frame["ticker"].iloc[0])
    prices = frame.drop(columns=["ticker"]).set_index("date").sort_index()
    fc = FeatureConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in feature_config.items()})
    feats = build_features(prices, market, indicators, fc, name=ticker)
    longest = max(m["seq_len"] for m in models)
    pos = np.flatnonzero((feats.index >= lo) & (feats.index <= hi))
    pos = pos[pos >= longest - 1]
    inputs = [FittedTransforms.from_dict(m["transforms"]).transform(feats, ticker if m["ticker_id"] else None)
              for m in models]
    return ticker, feats.index.to_numpy()[pos], pos, inputs


class Scorer:
    """Inference actor: loads every model once (ONNX Runtime where possible), threads = the actor's CPUs."""

    def __init__(self, refs: list[tuple[str, str]], backend: str = "onnx", threads: int = 1):
        """``refs``: per model (checkpoint path, pinned registry reference NAME@VERSION or the path again): the path
        where this process can read it (the driver's node), else the registry."""
        import torch

        from stocktrend.platform.registry.checkpoint import Predictor
        from stocktrend.platform.training.jobs import resolve_model
        from stocktrend.platform.registry.inference import ServedModel
        torch.set_num_threads(max(1, threads))
        self.models = [ServedModel(Predictor.load(path if os.path.isfile(path) else resolve_model(pinned)[0]),
                                   backend, threads=threads) for path, pinned in refs]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "rows_0" in batch:  # ticker_rows' blocks: cut each ticker's windows here
            return self._rows(batch)
        out = {"ticker": batch["ticker"], "as_of": batch["as_of"]}
        for i, m in enumerate(self.models):
            out[f"out_{i}"] = m.predict_proba(batch[f"x_{i}"], 512, False)[0]
        return out

    def _rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tickers, days, outs = [], [], [[] for _ in self.models]
        for j, ticker in enumerate(batch["ticker"]):
            d = np.asarray(batch["as_of"][j], dtype=np.int64).astype("datetime64[ns]")
            tickers.append(np.full(len(d), ticker, dtype=object))
            days.append(d)
            for i, m in enumerate(self.models):
                rows = np.asarray(batch[f"rows_{i}"][j], dtype=np.float32)
                seq_len = len(rows) - len(d) + 1
                x = np.lib.stride_tricks.sliding_window_view(rows, seq_len, axis=0).transpose(0, 2, 1)
                outs[i].append(m.predict_proba(np.ascontiguousarray(x), 512, False)[0])
        if not tickers:
            return {"ticker": np.array([], dtype=object), "as_of": np.array([], dtype="datetime64[ns]"),
                    **{f"out_{i}": np.zeros((0, 1), np.float32) for i in range(len(self.models))}}
        return {"ticker": np.concatenate(tickers), "as_of": np.concatenate(days),
                **{f"out_{i}": np.concatenate(o) for i, o in enumerate(outs)}}


def _model_specs(models: list[ScoredModel]) -> list[dict[str, Any]]:
    return [{"transforms": m.pred.transforms.to_dict(), "seq_len": m.pred.seq_len,
             "ticker_id": bool(m.pred.transforms.tickers)} for m in models]


def _concat(parts: list[dict[str, np.ndarray]], n_models: int) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in ("ticker", "as_of", *(f"out_{i}" for i in
                                                                                  range(n_models)))}


# --------------------------------------------------------------------------------------------------------------------
# The engines: the same two stages (features per ticker, then inference), a block of tickers read at a time
# --------------------------------------------------------------------------------------------------------------------

def run_local(s: Any, models: list, lo: pd.Timestamp, hi: pd.Timestamp, backend: str, threads: int = 1,
              block: int | None = None) -> dict[str, np.ndarray]:
    """Both stages in this process, a block of tickers read at a time (the reference for the Ray Data engine)."""
    specs = _model_specs(models)
    fc = models[0].pred.ckpt["feature_config"]
    scorer = Scorer([m.pinned for m in models], backend, threads)
    parts = []
    for u in s.read(hi, block):
        for frame in score_source.ticker_frames(u):
            out = ticker_windows(frame, u.market, u.indicators, fc, specs, lo, hi)
            if len(out["ticker"]):
                parts.append(scorer(out))
    return _concat(parts, len(models))


def _block_rows(batch: dict[str, np.ndarray], source: Any, read_to: Any, **kw: Any) -> dict[str, np.ndarray]:
    """A Ray task's block: read its tickers as the survey did, cut at the last scored day, and build each one's input
    rows."""
    parts = []
    if len(batch["ticker"]):
        u = source.load([str(t) for t in batch["ticker"]], read_to).cut(kw["hi"])
        parts = [ticker_rows(f, u.market, u.indicators, **kw) for f in score_source.ticker_frames(u)]
    if not parts:  # the source left every ticker of the block out
        return {"ticker": np.array([], dtype=object), "as_of": np.array([], dtype=object),
                **{f"rows_{i}": np.array([], dtype=object) for i in range(len(kw["models"]))}}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_ray(s: Any, models: list, lo: pd.Timestamp, hi: pd.Timestamp, backend: str, actors: int = 0
            ) -> dict[str, np.ndarray]:
    """Ray Data: blocks of ticker names -> each block's bars read and its tickers' input rows built (tasks) -> windows
    and inference (an actor pool). The driver ships names, never bars."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    from stocktrend.platform import console
    console.reroute()  # Ray Data configures its own log handlers when imported
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = actors or max(1, cpus)
    # A block holds whole tickers: one per ticker costs a Ray task per ticker, which on a small machine cost more than
    # the features (500 tickers: 0.6x the single process); about four blocks per CPU keep every CPU busy.
    names = s.tickers
    per_block = max(1, -(-len(names) // (4 * cpus)))
    # A row per ticker name, a block per read: a block of many rows keeps the feature stage, which Ray Data fuses into
    # the inference actors, at one task per block (blocks of one row, a list of names, were bundled four to a task).
    ds = ray.data.from_items([{"ticker": t} for t in names], override_num_blocks=len(s.blocks(per_block)))
    ds = ds.map_batches(_block_rows, batch_size=None, batch_format="numpy", num_cpus=1,
                        fn_kwargs={"source": s.source, "read_to": s.read_to,
                                   "feature_config": models[0].pred.ckpt["feature_config"],
                                   "models": _model_specs(models), "lo": lo, "hi": hi})
    ds = ds.map_batches(Scorer, fn_constructor_kwargs={"refs": [m.pinned for m in models], "backend": backend,
                                                       "threads": 1},
                        batch_size=4, batch_format="numpy", num_cpus=1,  # 4 tickers: ~1,000 windows a year
                        compute=ActorPoolStrategy(min_size=1, max_size=n_actors))
    parts = [b for b in ds.iter_batches(batch_size=None, batch_format="numpy") if len(b["ticker"])]
    return _concat(parts, len(models))


def result_frame(m: ScoredModel, tickers: np.ndarray, days: np.ndarray, out: np.ndarray, data_hash: str
                 ) -> pd.DataFrame:
    """The output matrix of one model -> the score table (probabilities or return, label, signal, confidence)."""
    pred = m.pred
    d = pred.describe(out)
    frame = pd.DataFrame({"ticker": tickers.astype(str), "as_of": pd.to_datetime(days).normalize()})
    for j, col in enumerate(pred.output_names):
        frame[f"p_{col}" if col in pred.class_names else col] = out[:, j].astype(np.float64)
    frame["label"], frame["signal"], frame["confidence"] = d.labels, d.signals, np.asarray(d.confidence, float)
    frame["model"], frame["version"] = m.name, m.version if m.version is not None else -1
    frame["model_kind"], frame["label_kind"], frame["data_hash"] = pred.model_kind, pred.kind.value, data_hash
    return frame.sort_values(["as_of", "ticker"]).reset_index(drop=True)


def partition_path(root: Path, m: ScoredModel, day: pd.Timestamp) -> Path:
    return root / m.name / m.folder / f"as_of={day.date()}" / PARTITION_FILE


def write_partitions(frame: pd.DataFrame, root: Path, m: ScoredModel) -> list[Path]:
    """One Parquet file per day, each written under a temporary name and renamed over the old one (atomic: a reader or
    a killed run sees the old day or the new one, never a mix; other days are not touched)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    written = []
    for day, rows in frame.groupby("as_of", sort=True):
        path = partition_path(root, m, pd.Timestamp(day))
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_dead_writers(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # dot: Parquet readers skip it
        try:
            pq.write_table(pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False), tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(path)
    return written


def _clear_dead_writers(path: Path) -> None:
    """Remove temporary files that a killed run left beside ``path`` (their writer's process is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)  # still running: not ours to touch
        except (ValueError, ProcessLookupError):
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


def read_scores(root: Path | str, name: str, version: int | str, start: str | None = None,
                end: str | None = None) -> pd.DataFrame:
    """The stored scores of one model version (optionally a day range), as one frame."""
    folder = Path(root) / name / (f"v{version}" if str(version).isdigit() else str(version))
    files = sorted(folder.glob(f"as_of=*/{PARTITION_FILE}"))
    if start or end:
        lo, hi = as_of_day(start or "1900-01-01"), as_of_day(end or "2200-01-01")
        files = [f for f in files if lo <= pd.Timestamp(f.parent.name.split("=", 1)[1]) <= hi]
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def score(opts: ScoreOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every ticker on every trading day of the range with the model (and challenger); write the partitions."""
    from stocktrend.platform.data.cache import default_home
    if opts.engine not in ENGINES:
        raise DataValidationError(f"unknown engine {opts.engine!r}; use {', '.join(ENGINES)}")
    t0 = time.perf_counter()
    champion = resolve(opts.model)
    models = [champion]
    if opts.challenger:
        challenger = resolve(opts.challenger)
        comparable(champion.pred, challenger.pred)
        models.append(challenger)
    latest = opts.as_of == LATEST
    end = None if latest else (opts.as_of or opts.end)
    # Read a few days past the range, only to tell "after the data" from "no trading day in the range"; the
    # features are then built from the bars up to the range's last day. The bars are read a block of tickers at a
    # time, by the survey here and again by the engine (stocktrend.loop.score_source): no process holds more than a
    # block's bars.
    peek = as_of_day(end) + pd.Timedelta(days=10) if end else None
    source = score_source.scoring_source(champion.pred, opts.universe, opts.data_dir)
    u = score_source.survey(champion.pred, source, peek, as_of_day(end) if end else None)
    if latest:  # the evening job: the last day every ticker's and the context's bars reach (a weekend is no error)
        opts = replace(opts, as_of=str(last_common_day(u).date()))
        say(f"as of        : {opts.as_of} (the last trading day in the data)")
    lo, hi = scoring_days(u, opts.as_of, opts.start, opts.end)
    data_hash = u.data_hash(hi)
    n_days = u.ticker_days(lo, hi)
    if n_days == 0:
        raise DataValidationError(f"no trading day between {lo.date()} and {hi.date()} in the data")
    engine = opts.engine
    if engine == "auto":
        engine = "local" if n_days <= LOCAL_MAX_TICKER_DAYS else "ray"
    say(f"scoring {len(u.tickers)} ticker(s) x {lo.date()} .. {hi.date()} ({n_days} ticker-days) with "
        f"{', '.join(f'{m.name} v{m.version}' if m.version is not None else m.path for m in models)} "
        f"on {engine}")
    if engine == "ray":
        u.kept = None  # the tasks read their own blocks: the driver drops a source it kept whole
        from stocktrend.platform.training.distributed import init_ray
        init_ray(opts.address)
        arrays = run_ray(u, models, lo, hi, opts.backend, opts.actors)
    else:
        arrays = run_local(u, models, lo, hi, opts.backend)
    if not arrays:
        raise DataValidationError(f"no ticker has a full window between {lo.date()} and {hi.date()} (the feature "
                                  f"warm-up and the {max(m.pred.seq_len for m in models)}-day window come first)")
    root = Path(opts.out_dir) if opts.out_dir else default_home() / SCORES_DIR
    result: dict[str, Any] = {"engine": engine, "root": str(root), "models": [], "ticker_days": n_days,
                              "rows": int(len(arrays["ticker"]))}
    for i, m in enumerate(models):
        frame = result_frame(m, arrays["ticker"], arrays["as_of"], arrays[f"out_{i}"], data_hash)
        paths = write_partitions(frame, root, m)
        result["models"].append({"name": m.name, "version": m.version, "rows": len(frame), "days": len(paths),
                                 "folder": str(root / m.name / m.folder), "frame": frame})
    result["seconds"] = time.perf_counter() - t0
    return result
