"""The partitioned feature dataset: one Parquet file per ticker and a manifest written last (the streaming path's
storage; ``stocktrend.platform.data.stream`` fits and reads it). See docs/data.md, "the streaming path"."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stocktrend.platform.data.cache import _computed_parts, _part_path, default_home, kept_tickers_and_features
from stocktrend.platform.data.features import FeatureConfig
from stocktrend.platform.data.sources import DataValidationError, Universe

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
FORMAT = 1


# --------------------------------------------------------------------------------------------------------------------
# The partitioned feature dataset
# --------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Partition:
    ticker: str
    file: str  # file name inside the dataset directory
    rows: int


@dataclass
class PartitionedPanel:
    """A finished partitioned feature dataset: where it is and what its manifest says (no rows are held)."""

    root: Path
    feature_names: list[str]
    partitions: list[Partition]
    data_hash: str
    cache_key: str
    cache_hit: bool = False
    seconds: float = 0.0

    @property
    def tickers(self) -> list[str]:
        return [p.ticker for p in self.partitions]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    def path_of(self, ticker: str) -> Path:
        return self.root / self._by_ticker()[ticker].file

    def _by_ticker(self) -> dict[str, Partition]:
        if not hasattr(self, "_index"):
            self._index = {p.ticker: p for p in self.partitions}
        return self._index

    def read(self, ticker: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One ticker's rows (index: date; ``columns`` of the features and ``close``), or one line naming the
        partition and what to do when it is missing, unreadable or lacks a column the manifest promises."""
        part = self._by_ticker().get(ticker)
        if part is None:
            raise DataValidationError(f"ticker {ticker} is not in the partitioned dataset {self.root}")
        path = self.root / part.file
        fix = (f"delete {path} (if it is there) and run the same `stocktrend data build --partitioned` again: it "
               f"recomputes only the missing tickers")
        if not path.is_file():
            raise DataValidationError(f"partition of ticker {ticker} is missing ({path}): {fix}")
        import pyarrow.parquet as pq
        try:
            have = set(pq.read_schema(path).names)
            missing = [c for c in (columns or [*self.feature_names, "close"]) if c not in have]
            if missing:
                raise DataValidationError(
                    f"partition of ticker {ticker} ({path}) does not have the columns the dataset's manifest lists "
                    f"(missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; the schema changed "
                    f"between partitions): {fix}")
            frame = pd.read_parquet(path, columns=columns)
        except DataValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - arrow's errors for a corrupt file are several types
            raise DataValidationError(f"partition of ticker {ticker} ({path}) cannot be read ({type(exc).__name__}: "
                                      f"{str(exc)[:200]}): {fix}") from None
        if len(frame) != part.rows:
            raise DataValidationError(f"partition of ticker {ticker} ({path}) has {len(frame)} rows, the manifest "
                                      f"says {part.rows}: {fix}")
        return frame

    @classmethod
    def open(cls, root: Path | str) -> PartitionedPanel:
        """A finished dataset (its manifest is there); an unfinished one is a clear error."""
        root = Path(root)
        manifest = root / MANIFEST
        if not manifest.is_file():
            raise DataValidationError(f"{root} is not a finished partitioned feature dataset (no {MANIFEST}): run "
                                      f"`stocktrend data build --partitioned` with the same data to finish it")
        try:
            m = json.loads(manifest.read_text())
            parts = [Partition(p["ticker"], p["file"], int(p["rows"])) for p in m["partitions"]]
            return cls(root, list(m["feature_names"]), parts, m["data_hash"], m["cache_key"], True)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataValidationError(f"{manifest} is unreadable ({type(exc).__name__}: {exc}): delete it and run "
                                      f"`stocktrend data build --partitioned` again (finished tickers are kept)"
                                      ) from None


def dataset_dir(universe: Universe, cfg: FeatureConfig, cache_dir: Path | str | None = None) -> tuple[Path, str, str]:
    """Where a universe's partitioned dataset lives: (directory, data hash, cache key)."""
    data_hash = universe.content_hash()
    key = f"{data_hash}-{cfg.key()}"
    base = Path(cache_dir) if cache_dir is not None else default_home() / "cache"
    return base / f"features-{key}.dataset", data_hash, key


def _readable_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq
    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # noqa: BLE001 - a truncated or foreign file: recomputed
        return None


def build_partitioned(universe: Universe, cfg: FeatureConfig | None = None, cache_dir: Path | str | None = None,
                      n_jobs: int = 1) -> PartitionedPanel:
    """The universe's features as one Parquet file per ticker plus a manifest (see the module docstring)."""
    import pyarrow.parquet as pq
    cfg = cfg or FeatureConfig()
    t0 = time.perf_counter()
    root, data_hash, key = dataset_dir(universe, cfg, cache_dir)
    if (root / MANIFEST).is_file():
        panel = PartitionedPanel.open(root)
        broken = [p.ticker for p in panel.partitions if _readable_rows(root / p.file) != p.rows]
        if not broken:
            panel.seconds = time.perf_counter() - t0
            return panel
        log.warning("features: %d partition(s) missing or damaged (%s); recomputing them", len(broken),
                    ", ".join(broken[:10]))
        (root / MANIFEST).unlink()
    root.mkdir(parents=True, exist_ok=True)
    for name in universe.tickers:  # a file a crash or a user damaged is recomputed, the rest kept
        path = _part_path(root, name)
        if path.is_file() and _readable_rows(path) is None:
            log.warning("features: the partition of ticker %s (%s) cannot be read; it is recomputed", name, path)
            path.unlink()
    _computed_parts(universe, cfg, n_jobs, root)  # computes and writes what is missing (the reader is not used)
    rows, columns = {}, {}
    for name in universe.tickers:
        path = _part_path(root, name)
        rows[name] = _readable_rows(path)
        if rows[name] is None:
            raise DataValidationError(f"features of ticker {name} were written to {path} but cannot be read back: "
                                      f"delete the file and run the build again")
        columns[name] = [c for c in pq.read_schema(path).names if c != "date"]
    keep, names = kept_tickers_and_features(universe, cfg, rows, columns)
    manifest = {"format": FORMAT, "data_hash": data_hash, "cache_key": key, "feature_names": names,
                "partitions": [{"ticker": str(n), "file": _part_path(root, n).name, "rows": int(rows[n])}
                               for n in keep],
                "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = root / f"{MANIFEST}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, root / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    panel = PartitionedPanel.open(root)
    panel.cache_hit, panel.seconds = False, time.perf_counter() - t0
    return panel
