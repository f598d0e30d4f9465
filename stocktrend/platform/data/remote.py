"""A folder of bars in an object store (``--data s3://bucket/prefix``, ``STOCKTREND_DATA=s3://...``): the evening job
on Kubernetes reads the day's bars where the feed wrote them.

The folder is read through Arrow's filesystem layer (``pyarrow.fs``: S3, GCS, HDFS; the usual AWS variables, including
``AWS_ENDPOINT_URL`` for S3-compatible stores) and copied to a local snapshot,
``$STOCKTREND_HOME/cache/bars/<key>/``, keyed by the URI and the listing (each file's path, size and modification
time): an unchanged folder is not downloaded again, a changed one gets a new snapshot, and a snapshot is complete or
absent (written under a temporary name, then renamed), so concurrent readers (Ray workers of a replay) never see a
half-copied folder. The same layout as a local folder: one file per ticker, ``market/``, ``indicators/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from stocktrend.platform.data.sources import DataValidationError


def is_remote(path) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def local_copy(uri: str) -> Path:
    """The local snapshot of the remote folder ``uri`` (downloaded when its listing changed)."""
    import pyarrow.fs as pafs

    from stocktrend.platform.data.cache import default_home
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except Exception as exc:  # no credentials, no such bucket, an unknown scheme: one line naming the folder
        raise DataValidationError(f"{uri}: cannot list the data folder ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
    files = [i for i in files if Path(i.path).suffix.lower() in (".csv", ".parquet", ".pq")]
    if not files:
        raise DataValidationError(f"{uri}: no .csv or .parquet files there (the layout of --data: one file per "
                                  f"ticker, market/ and indicators/ beside them)")
    listing = "\n".join(f"{i.path}\t{i.size}\t{i.mtime_ns}" for i in files)
    key = hashlib.sha256(f"{uri}\n{listing}".encode()).hexdigest()[:16]
    dest = default_home() / "cache" / "bars" / key
    if dest.is_dir():
        return dest
    tmp = dest.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    prefix = root.rstrip("/") + "/"
    try:
        for info in files:
            out = tmp / info.path[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished the same snapshot first: use it
            if not dest.is_dir():
                raise
    except DataValidationError:
        raise
    except Exception as exc:
        raise DataValidationError(f"{uri}: reading the data folder failed ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
