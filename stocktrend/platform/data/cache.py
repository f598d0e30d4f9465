"""Engineered-feature cache: one Parquet file per (data, feature config), reused by every sequence length and label.

The cached panel holds ``ticker, date, close`` and the float32 features of every ticker, warm-up already trimmed.
Labels, splits, scaling, selection and windows are derived from it cheaply, so changing ``sequence_length``,
``horizon``, the label kind or ``top_k`` never recomputes features. Files are written to a temporary name and renamed,
so an interrupted build never leaves a half-written cache entry. While a panel is built, each ticker's features go to
``features-<key>.parts/<ticker>.parquet`` as soon as they are computed: a killed build keeps them and the next one
computes only the missing tickers (one log line says how many were kept); the folder is removed once the panel file
is written.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.platform.data.features import FeatureConfig, build_features
from stocktrend.platform.data.sources import DataValidationError, Universe

log = logging.getLogger(__name__)

# How many times features were actually computed in this process (tests assert that a cache hit adds nothing).
COMPUTE_COUNT = {"tickers": 0}


HOME_ENV = "STOCKTREND_HOME"
DURABLE_HOME = "~/stocktrend-runs"  # the default when the working directory is Ray's temporary copy of a job's files
_ANNOUNCED: set[str] = set()


def in_ray_working_dir(cwd: Path | None = None) -> bool:
    """The process runs inside Ray's temporary copy of a runtime-env working directory (``ray job submit
    --working-dir``, a job's workers): ``.../runtime_resources/working_dir_files/_ray_pkg_<hash>/...``, which Ray
    deletes when it is no longer used."""
    parts = (cwd or Path.cwd()).resolve().parts
    return "runtime_resources" in parts and any(p.startswith("_ray_pkg_") for p in parts)


def default_home() -> Path:
    """The project's run directory: $STOCKTREND_HOME, else ./stocktrend-runs; inside a Ray job's temporary working
    directory (where ./stocktrend-runs would vanish with the job's files) ~/stocktrend-runs, named once on stderr."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    if in_ray_working_dir():
        home = Path(DURABLE_HOME).expanduser().resolve()
        if str(home) not in _ANNOUNCED:
            _ANNOUNCED.add(str(home))
            print(f"stocktrend: STOCKTREND_HOME is not set and this runs in Ray's temporary working directory "
                  f"({Path.cwd()}); results go to {home} (set STOCKTREND_HOME, e.g. in --runtime-env-json, to choose)",
                  file=sys.stderr, flush=True)
        return home
    return Path("stocktrend-runs").resolve()


@dataclass
class FeaturePanel:
    """Features of every ticker: ``values`` is (rows, features) float32 in column-major order (each feature contiguous,
    so Parquet columns convert without copies); ``meta`` has ``ticker`` (category), ``date`` and ``close`` per row,
    rows grouped by ticker and sorted by date."""

    meta: pd.DataFrame
    values: np.ndarray
    feature_names: list[str]
    data_hash: str  # hash of the raw input values
    cache_key: str  # data hash + feature config
    path: Path | None = None
    cache_hit: bool = False
    seconds: float = 0.0

    @property
    def tickers(self) -> list[str]:
        return [str(t) for t in dict.fromkeys(self.meta["ticker"].tolist())]

    def without(self, tickers: list[str]) -> FeaturePanel:
        """The panel minus some tickers (a copy of the kept rows)."""
        keep = ~self.meta["ticker"].astype(str).isin(tickers).to_numpy()
        meta = self.meta[keep].reset_index(drop=True)
        meta["ticker"] = meta["ticker"].cat.remove_unused_categories() if isinstance(
            meta["ticker"].dtype, pd.CategoricalDtype) else meta["ticker"]
        return FeaturePanel(meta, np.asfortranarray(self.values[keep]), self.feature_names, self.data_hash,
                            self.cache_key, self.path, self.cache_hit, self.seconds)

    def frame(self) -> pd.DataFrame:
        """The panel as one DataFrame (a copy; for inspection, not for the hot path)."""
        return pd.concat([self.meta.reset_index(drop=True),
                          pd.DataFrame(self.values, columns=self.feature_names)], axis=1)


def _one(args: tuple) -> tuple[str, pd.DataFrame]:
    name, frame, market, indicators, cfg = args
    try:
        return name, build_features(frame, market, indicators, cfg, name=name)
    except DataValidationError:
        raise
    except Exception as exc:  # one line naming the ticker, whatever broke inside the feature code
        raise DataValidationError(f"features of ticker {name} failed: {type(exc).__name__}: {exc}") from exc


def _part_path(parts_dir: Path, name: str) -> Path:
    from urllib.parse import quote
    return parts_dir / f"{quote(str(name), safe='')}.parquet"


def _write_part(parts_dir: Path, name: str, part: pd.DataFrame) -> None:
    """One ticker's features, written whole or not at all (temporary name, then rename)."""
    parts_dir.mkdir(parents=True, exist_ok=True)  # another build of the same panel may have finished and removed it
    path = _part_path(parts_dir, name)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        part.rename_axis("date").to_parquet(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _computed_parts(universe: Universe, cfg: FeatureConfig, n_jobs: int, parts_dir: Path | None):
    """(name, features) of every ticker in universe order. With ``parts_dir`` every ticker's features are written
    there as soon as they are computed and read back one at a time: a killed build keeps the finished tickers and the
    next build computes only the others. (While computing, a parallel build holds the finished results until the
    pool ends, as the in-memory path does.)"""
    jobs = [(name, frame, universe.market, universe.indicators, cfg) for name, frame in universe.tickers.items()]
    if parts_dir is None:
        if n_jobs > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=n_jobs) as pool:
                parts = list(pool.map(_one, jobs, chunksize=max(1, len(jobs) // (4 * n_jobs))))
        else:
            parts = [_one(j) for j in jobs]
        COMPUTE_COUNT["tickers"] += len(jobs)
        return parts
    parts_dir.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not _part_path(parts_dir, j[0]).is_file()]
    if len(todo) < len(jobs):
        log.info("features: %d of %d ticker(s) kept from an interrupted build (%s); computing %d", len(jobs) - len(todo),
                 len(jobs), parts_dir, len(todo))
    step = max(1, len(todo) // 10)
    done = 0

    def finished(name: str, part: pd.DataFrame) -> None:
        nonlocal done
        _write_part(parts_dir, name, part)
        COMPUTE_COUNT["tickers"] += 1
        done += 1
        if len(todo) >= 50 and (done % step == 0 or done == len(todo)):
            log.info("features: %d / %d ticker(s) computed", done, len(todo))
    if n_jobs > 1 and len(todo) > 1:
        from concurrent.futures import FIRST_COMPLETED, wait
        # A bounded number of tickers in flight, each result written and dropped as soon as it arrives: memory stays
        # at a few tickers' features whatever the panel's breadth (holding every future kept every result alive).
        queue = iter(todo)
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            running = set()
            try:
                while True:
                    for j in queue:
                        running.add(pool.submit(_one, j))
                        if len(running) >= 2 * n_jobs:
                            break
                    if not running:
                        break
                    done_now, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done_now:
                        finished(*fut.result())
                    del done_now
            except BaseException:
                for fut in running:
                    fut.cancel()
                raise
    else:
        for j in todo:
            finished(*_one(j))
    by_name = {j[0]: j for j in jobs}

    def read(name: str) -> pd.DataFrame:
        try:
            return pd.read_parquet(_part_path(parts_dir, name))
        except FileNotFoundError:  # removed by a concurrent build of the same panel that finished first
            part = _one(by_name[name])[1]
            _write_part(parts_dir, name, part)
            return part
    return ((name, read(name)) for name in universe.tickers)


def kept_tickers_and_features(universe: Universe, cfg: FeatureConfig, lengths: dict[str, int],
                              columns: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Which tickers a built panel keeps (a breadth universe leaves out those with no row after the warm-up; others
    refuse them) and the features every kept ticker has, in the first one's order (a close-only ticker in a panel of
    OHLCV ones takes the range and volume features out of the whole panel: one model sees one feature list)."""
    empty = [name for name, n in lengths.items() if n == 0]
    keep = list(universe.tickers)
    if empty and universe.drop_short and len(empty) < len(lengths):
        log.warning("%d ticker(s) with no row after the %d-day feature warm-up left out: %s", len(empty), cfg.warmup,
                    ", ".join(map(str, empty)))
        keep = [name for name in keep if lengths[name]]
    elif empty:
        raise DataValidationError(f"too little history: no rows left after the {cfg.warmup}-day feature warm-up for "
                                  f"{', '.join(map(str, empty[:10]))}{' ...' if len(empty) > 10 else ''}"
                                  f"{' (a short history needs --features short)' if cfg.warmup > 100 else ''}")
    common = set.intersection(*(set(columns[name]) for name in keep))
    names = [c for c in columns[keep[0]] if c != "close" and c in common]
    dropped = sorted({c for name in keep for c in columns[name] if c not in common})
    if dropped:
        log.info("features missing for some tickers, left out of the panel: %s", ", ".join(dropped))
    return keep, names


def compute_panel(universe: Universe, cfg: FeatureConfig, n_jobs: int = 1, parts_dir: Path | None = None
                  ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Features of every ticker (in parallel processes when ``n_jobs > 1``), stacked in ticker order; with
    ``parts_dir``, through per-ticker files there (resumable; see ``_computed_parts``)."""
    import pyarrow.parquet as pq
    parts = _computed_parts(universe, cfg, n_jobs, parts_dir)  # computed (and written) here; read back lazily
    try:
        if parts_dir is not None:  # sizes and columns from the files' metadata, before any part is read
            lengths = {name: pq.read_metadata(_part_path(parts_dir, name)).num_rows for name in universe.tickers}
            columns = {name: [c for c in pq.read_schema(_part_path(parts_dir, name)).names if c != "date"]
                       for name in universe.tickers}
    except FileNotFoundError:  # a concurrent build of the same panel finished first and removed the files
        parts_dir = None
        parts = _computed_parts(universe, cfg, n_jobs, None)
    if parts_dir is None:
        parts = list(parts)
        lengths = {name: len(part) for name, part in parts}
        columns = {name: list(part.columns) for name, part in parts}
    keep, names = kept_tickers_and_features(universe, cfg, lengths, columns)
    n = sum(lengths[name] for name in keep)
    values = np.empty((n, len(names)), dtype=np.float32, order="F")
    tickers, dates, closes = [], [], []
    row = 0
    kept = set(keep)
    for name, part in parts:  # one ticker at a time: peak memory stays near one panel
        if name not in kept:
            continue
        values[row:row + len(part)] = part[names].to_numpy(dtype=np.float32)
        tickers.append(np.full(len(part), name, dtype=object))
        dates.append(part.index.to_numpy(dtype="datetime64[ns]"))
        closes.append(part["close"].to_numpy(dtype=np.float64))
        row += len(part)
        del part
    meta = pd.DataFrame({"ticker": pd.Categorical(np.concatenate(tickers), categories=keep),
                         "date": np.concatenate(dates), "close": np.concatenate(closes)})
    return meta, values, names


def _write_parquet(path: Path, meta: pd.DataFrame, values: np.ndarray, names: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    cols = {c: pa.Array.from_pandas(meta[c]) for c in meta.columns}
    cols.update({name: pa.array(values[:, j]) for j, name in enumerate(names)})
    pq.write_table(pa.table(cols), path)


def _read_parquet(path: Path) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(path)
    names = [c for c in pf.schema_arrow.names if c not in ("ticker", "date", "close")]
    meta = pf.read(columns=["ticker", "date", "close"]).to_pandas()
    values = np.empty((len(meta), len(names)), dtype=np.float32, order="F")
    step = 16  # read a few columns at a time so the Arrow copy never holds the whole panel twice
    for j in range(0, len(names), step):
        table = pf.read(columns=names[j:j + step])
        for k in range(table.num_columns):
            values[:, j + k] = table.column(k).to_numpy()
    return meta, values, names


def read_panel(path: Path | str, data_hash: str, cache_key: str) -> FeaturePanel:
    """A cached panel read back from its Parquet file (Ray workers use it with --data-transport shared-path)."""
    t0 = time.perf_counter()
    meta, values, names = _read_parquet(Path(path))
    return FeaturePanel(meta, values, names, data_hash, cache_key, Path(path), True, time.perf_counter() - t0)


def load_or_build_panel(universe: Universe, cfg: FeatureConfig | None = None, cache_dir: Path | str | None = None,
                        use_cache: bool = True, n_jobs: int = 1) -> FeaturePanel:
    cfg = cfg or FeatureConfig()
    t0 = time.perf_counter()
    data_hash = universe.content_hash()
    key = f"{data_hash}-{cfg.key()}"
    path = None
    if use_cache:
        cache_dir = Path(cache_dir) if cache_dir is not None else default_home() / "cache"
        path = cache_dir / f"features-{key}.parquet"
        if path.is_file():
            try:
                panel = read_panel(path, data_hash, key)
                panel.seconds = time.perf_counter() - t0
                return panel
            except (OSError, ValueError, KeyError) as exc:  # a corrupt entry is rebuilt, not trusted
                log.warning("feature cache %s unreadable (%s); rebuilding", path, exc)
    parts_dir = path.with_name(path.stem + ".parts") if path is not None else None
    meta, values, names = compute_panel(universe, cfg, n_jobs=n_jobs, parts_dir=parts_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        try:
            _write_parquet(tmp, meta, values, names)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        import shutil
        shutil.rmtree(parts_dir, ignore_errors=True)  # the whole panel is written: the per-ticker files are done
    return FeaturePanel(meta, values, names, data_hash, key, path, False, time.perf_counter() - t0)


def ticker_offsets(meta: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Ticker names in row order and the row offset where each starts (length n_tickers + 1)."""
    col = meta["ticker"]
    codes = col.cat.codes.to_numpy() if isinstance(col.dtype, pd.CategoricalDtype) else col.to_numpy()
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], change, [len(codes)]]).astype(np.int64)
    names = [str(col.iloc[s]) for s in starts[:-1]]
    if len(set(names)) != len(names):
        raise ValueError("feature panel rows are not grouped by ticker")
    return names, starts
