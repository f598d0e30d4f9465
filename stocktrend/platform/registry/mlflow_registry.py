"""MLflow tracking and model registry.

Default store: SQLite at ``$STOCKTREND_HOME/mlflow.db`` with artefacts under ``$STOCKTREND_HOME/mlartifacts``;
``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``) points anywhere else MLflow supports.

A registered version is created by exactly one call, after the checkpoint has been written atomically and uploaded as
a run artefact; a run that fails or is interrupted before that point is marked FAILED/KILLED and leaves no version.
The ``production`` alias keeps its previous holders in a registered-model tag so ``rollback`` can restore them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from stocktrend.models import DEFAULT_KIND
from stocktrend.platform.data.cache import default_home

log = logging.getLogger(__name__)

EXPERIMENT = "stocktrend"
DEFAULT_MODEL = "stocktrend"
ALIAS = "production"
PREVIOUS_ALIAS = "previous_production"  # the holder production had before the last move
CHALLENGER_ALIAS = "challenger"  # the last retrain's candidate (gated or not)
LOCK_TIMEOUT_S = 60.0
HISTORY_TAG = "stocktrend.production_history"
CHECKPOINT_DIR = "checkpoint"  # where versions registered before the MLflow Model flavor keep their model.pt
CHECKPOINT_FILE = "model.pt"
MODEL_DIR = "model"  # the logged MLflow Model (pyfunc flavor; the checkpoint is its artifacts/model.pt)


class RegistryError(ValueError):
    """Unknown model, version or alias, or a registry operation that cannot be done; the message says which."""


def user_tracking_uri() -> str | None:
    """The ``MLFLOW_TRACKING_URI`` the user exported, or None. MLflow 3's ``set_tracking_uri`` exports the variable for
    its subprocesses; ``client`` undoes that export, so the variable only ever holds the user's value (a later
    ``STOCKTREND_HOME`` in the same process gets its own store, and a test that restores the environment restores
    the user's choice, not one this process made)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def tracking_uri(uri: str | None = None) -> str:
    """``uri``; else the user's ``MLFLOW_TRACKING_URI``; else SQLite under ``$STOCKTREND_HOME``."""
    if uri:
        return uri
    user = user_tracking_uri()
    if user:
        return user
    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def client(uri: str | None = None, experiment: str = EXPERIMENT):
    """An MlflowClient on the chosen store, with the experiment created (artefacts under $STOCKTREND_HOME)."""
    import mlflow
    from mlflow import MlflowClient

    from stocktrend.platform import console
    console.reroute()  # mlflow installs its own console handler when first imported
    uri = tracking_uri(uri)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:  # undo MLflow's export (see user_tracking_uri); Ray workers and replicas get the home instead
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    location = artifact_root(uri)
    if exp is None:
        c.create_experiment(experiment, artifact_location=location)
    elif location and exp.artifact_location.rstrip("/") != location.rstrip("/") and location not in _WARNED:
        _WARNED.add(location)
        log.warning("MLflow experiment %r keeps its artifacts at %s (set when it was created), not %s; "
                    "new runs go there too (use another experiment name to start one at the new location)",
                    experiment, exp.artifact_location, location)
    mlflow.set_experiment(experiment)
    return c


_WARNED: set[str] = set()


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artefacts (checkpoints, model files, reports) go: ``$STOCKTREND_ARTIFACTS`` if set;
    else, for a local store (SQLite, files), ``$STOCKTREND_STORAGE/mlartifacts`` when that is set (the storage every
    node reaches, e.g. ``s3://bucket/stocktrend``), else ``$STOCKTREND_HOME/mlartifacts``; else (a tracking server)
    wherever the server says (its ``--default-artifact-root`` / ``--artifacts-destination``). On S3, MLflow and Ray
    read the endpoint and credentials from the usual AWS variables (``AWS_ENDPOINT_URL`` for an S3-compatible server,
    ``AWS_ACCESS_KEY_ID``, ...)."""
    explicit = os.environ.get("STOCKTREND_ARTIFACTS")
    local_store = uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri
    base = os.environ.get("STOCKTREND_STORAGE") if local_store else None
    if explicit or base:
        root = explicit or f"{base.rstrip('/')}/mlartifacts"
        return root if "://" in root else Path(root).expanduser().resolve().as_uri()
    return (default_home() / "mlartifacts").as_uri() if local_store else None


@contextmanager
def tracked_run(run_name: str, params: dict[str, Any], uri: str | None = None, tags: dict[str, str] | None = None,
                nested: bool = False) -> Iterator[Any]:
    """An MLflow run that ends FINISHED on success, KILLED on Ctrl-C and FAILED on any error."""
    import mlflow
    client(uri)
    run = mlflow.start_run(run_name=run_name, nested=nested, tags=tags)
    try:
        mlflow.log_params({k: _short(v) for k, v in params.items()})
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def _short(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
    return s if len(s) <= 500 else s[:497] + "..."


def log_epoch_metrics(row: dict[str, float], epoch: int) -> None:
    import mlflow
    mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=int(epoch))


def log_pyfunc(ckpt_path: Path, run_id: str, ckpt: dict[str, Any]):
    """Log the checkpoint as an MLflow Model of the run (pyfunc flavor from code, signature, input example)."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from stocktrend.platform.registry import pyfunc_model
    from stocktrend.platform.registry.checkpoint import Predictor
    pred = Predictor(ckpt)
    example = np.zeros((2, pred.seq_len, pred.n_features), dtype=np.float32)
    out, _ = pred.predict_proba(example)
    with tempfile.TemporaryDirectory() as tmp:
        # The registry stores the canonical file name, whatever the local file is called.
        canonical = Path(tmp) / CHECKPOINT_FILE
        import shutil
        shutil.copyfile(ckpt_path, canonical)
        active = mlflow.active_run()
        same = active is not None and active.info.run_id == run_id
        with contextlib.nullcontext() if same else mlflow.start_run(run_id=run_id, nested=active is not None):
            return mlflow.pyfunc.log_model(
                name=MODEL_DIR, python_model=pyfunc_model.__file__, artifacts={"checkpoint": str(canonical)},
                signature=infer_signature(example, out), input_example=example[:1],
                # The platform itself, at the version that wrote the model (it is not on PyPI: install it from the
                # repository where the model is loaded; --env-manager local uses the current environment).
                pip_requirements=[f"stocktrend=={_platform_version()}"],
                metadata={"model_kind": pred.model_kind, "label_kind": pred.kind.value,
                          "outputs": pred.output_names})


def _platform_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("stocktrend")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.1.0"


def register_checkpoint(ckpt_path: str | Path, run_id: str, name: str = DEFAULT_MODEL,
                        metrics: dict[str, float] | None = None, description: str = "",
                        ckpt: dict[str, Any] | None = None, first_takes_production: bool = True) -> int:
    """Log the checkpoint as an MLflow Model of the run, then create the registered version in one call; returns the
    version. Every version loads with ``mlflow.pyfunc.load_model`` and holds the weights-only checkpoint that the
    platform itself loads. When the name has no ``production`` holder yet, the new version takes it (logged): a first
    model is served without a manual promotion; every later one goes through the gate or ``models promote``."""
    from mlflow.exceptions import MlflowException

    from stocktrend.platform.registry.checkpoint import read_checkpoint
    c = client()
    ckpt_path = Path(ckpt_path)
    ckpt = ckpt if ckpt is not None else read_checkpoint(ckpt_path)
    info = log_pyfunc(ckpt_path, run_id, ckpt)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="stocktrend models (MLflow pyfunc + weights-only checkpoint)")
    tags = {f"metric.{k}": f"{v:.6g}" for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    tags.update({"model_kind": ckpt.get("model_kind", DEFAULT_KIND), "label_kind": ckpt["label_kind"]})
    mv = c.create_model_version(name, source=info.model_uri, run_id=run_id, tags=tags, description=description)
    c.set_tag(run_id, "stocktrend.registered_version", f"{name}/{mv.version}")
    if first_takes_production:
        with alias_lock(name):
            if ALIAS not in (c.get_registered_model(name).aliases or {}):
                c.set_registered_model_alias(name, ALIAS, str(mv.version))
                log.info("%s had no %s version: version %s, the first registered, takes it (stocktrend serve serves "
                         "it; later versions go through the gate of stocktrend retrain, or stocktrend models promote)",
                         name, ALIAS, mv.version)
    return int(mv.version)


def _registered(c, name: str):
    from mlflow.exceptions import MlflowException
    try:
        return c.get_registered_model(name)
    except MlflowException:
        names = [m.name for m in c.search_registered_models()]
        raise RegistryError(f"unknown model {name!r}; registered: {', '.join(names) or 'none'} (train one: "
                            f"stocktrend train --model-name {name}, or stocktrend quickstart)") from None


def list_versions(name: str = DEFAULT_MODEL) -> list[dict[str, Any]]:
    c = client()
    rm = _registered(c, name)
    by_version: dict[str, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(str(v), []).append(alias)
    out = []
    for mv in sorted(c.search_model_versions(f"name='{name}'"), key=lambda m: int(m.version)):
        out.append({"version": int(mv.version), "aliases": by_version.get(str(mv.version), []),
                    "run_id": mv.run_id, "created": mv.creation_timestamp, "source": mv.source,
                    "metrics": {k[7:]: v for k, v in (mv.tags or {}).items() if k.startswith("metric.")},
                    "model_kind": (mv.tags or {}).get("model_kind", DEFAULT_KIND),
                    "label_kind": (mv.tags or {}).get("label_kind", ""),
                    "description": mv.description or ""})
    return out


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME@ALIAS`` or ``NAME@VERSION`` -> (name, alias-or-version or None)."""
    name, _, ref = spec.partition("@")
    if not name:
        raise RegistryError(f"bad model reference {spec!r}; use NAME, NAME@ALIAS or NAME@VERSION")
    return name, ref or None


def _no_store_yet() -> bool:
    """The default SQLite store has not been created: nothing is registered (answered without creating it)."""
    return not os.environ.get("MLFLOW_TRACKING_URI") and not (default_home() / "mlflow.db").is_file()


def get_version(name: str, ref: str | None = None) -> dict[str, Any]:
    """Resolve an alias or version number (default: the production alias, else the latest version)."""
    if _no_store_yet():
        raise RegistryError(f"unknown model {name!r}; registered: none, no registry at {default_home()} yet (train "
                            f"one: stocktrend train --model-name {name}, or stocktrend quickstart)")
    c = client()
    rm = _registered(c, name)
    versions = {v["version"]: v for v in list_versions(name)}
    if not versions:
        raise RegistryError(f"model {name!r} has no versions")
    if ref is None:
        ref = ALIAS if ALIAS in (rm.aliases or {}) else str(max(versions))
    if ref.isdigit():
        if int(ref) not in versions:
            raise RegistryError(f"model {name!r} has no version {ref}; versions: "
                                f"{', '.join(map(str, sorted(versions)))}")
        return versions[int(ref)]
    if ref not in (rm.aliases or {}):
        raise RegistryError(f"model {name!r} has no alias {ref!r}; aliases: {', '.join(rm.aliases or {}) or 'none'}; "
                            f"versions: {', '.join(map(str, sorted(versions)))} (set it: stocktrend models promote "
                            f"{name} {max(versions)})")
    return versions[int(rm.aliases[ref])]


def download(name: str, ref: str | None = None, dst: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Local path of a registered checkpoint file. Without ``dst`` it is a copy in the home's model cache
    (``$STOCKTREND_HOME/cache/models/<name>/v<version>-<run>``), fetched from the artefact store once per version: a
    registered version never changes, so every later load (serve replicas, score, retrain's gate) reuses it and nothing
    is left in the temporary directory. With ``dst`` the copy goes there and belongs to the caller."""
    import mlflow
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    info = get_version(name, ref)
    cached = None
    if dst is not None:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info["source"], dst_path=str(dst)))
    else:
        try:
            cached, local = _cached_download(name, info)
        except OSError as exc:  # a home we may not write (permissions, a read-only volume): a private copy
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            log.warning("model cache not writable (%s): downloading %s v%s to a temporary folder", exc, name,
                        info["version"])
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=info["source"], dst_path=tempfile.mkdtemp(prefix="stocktrend-model-")))
    path = _checkpoint_in(local)
    if not path.is_file() and cached is not None:  # the cached copy lost its file since: fetched again, once
        shutil.rmtree(cached, ignore_errors=True)
        cached, local = _cached_download(name, info)
        path = _checkpoint_in(local)
    if not path.is_file():
        raise RegistryError(f"{name} version {info['version']}: checkpoint file missing from {info['source']}")
    return path, info


def _checkpoint_in(local: Path) -> Path:
    """The checkpoint file of a download: an MLflow Model folder's, an older version's checkpoint/ folder's, or it."""
    if local.is_dir():
        return next((p for p in (local / "artifacts" / CHECKPOINT_FILE, local / CHECKPOINT_FILE) if p.is_file()),
                    local / CHECKPOINT_FILE)
    return local


CACHE_DONE = ".downloaded"  # written last inside a cached version's folder: the path of the download within it
STALE_DOWNLOAD_S = 3600.0


def model_cache(name: str) -> Path:
    return default_home() / "cache" / "models" / re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _cached_download(name: str, info: dict[str, Any]) -> tuple[Path, Path]:
    """The version's artefacts in the model cache: downloaded into a private temporary folder beside it, then renamed
    into place whole (two processes fetching the same version at once both succeed; a killed download leaves only
    its temporary folder, removed by a later download once an hour old). Returns (the version's folder, the download
    within it)."""
    import hashlib
    import time

    import mlflow
    root = model_cache(name)
    key = info.get("run_id") or hashlib.sha256(str(info["source"]).encode()).hexdigest()
    final = root / f"v{info['version']}-{key[:16]}"
    done = final / CACHE_DONE
    if done.is_file():
        return final, final / done.read_text().strip()
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > STALE_DOWNLOAD_S:
                shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info["source"], dst_path=str(tmp)))
        rel = local.relative_to(tmp).as_posix() if local != tmp else "."
        (tmp / CACHE_DONE).write_text(rel + "\n")
        if final.exists() and not done.is_file():  # not ours (every folder we put in place holds CACHE_DONE)
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another process put the same version in place first: use its copy
            if not done.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, final / done.read_text().strip()


def _history(rm) -> list[int]:
    return [int(v) for v in json.loads((rm.tags or {}).get(HISTORY_TAG, "[]"))]


@contextmanager
def alias_lock(name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive lock per registered model name among the processes of one $STOCKTREND_HOME (``flock`` on
    ``locks/<name>.lock``; the kernel releases it when a holder dies, SIGKILL included). Alias moves read, check and
    set under it, so two retrains finishing at once cannot both move ``production``. A wait longer than ``timeout_s``
    is a RegistryError naming the lock file."""
    import fcntl
    import time
    path = default_home() / "locks" / f"{name.replace('/', '_')}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + timeout_s
    with open(path, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise RegistryError(f"model {name!r}: another process has held {path} for more than "
                                        f"{timeout_s:g} s (a retrain or promotion in progress)") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def aliases(name: str) -> dict[str, int]:
    """Alias -> version of a registered model."""
    return {a: int(v) for a, v in (_registered(client(), name).aliases or {}).items()}


def set_alias(name: str, alias: str, version: int) -> None:
    """Point any alias (challenger, ...) at a version; ``production`` goes through ``promote``."""
    if alias == ALIAS:
        raise RegistryError(f"use promote() to move {ALIAS!r}")
    c = client()
    info = get_version(name, str(version))
    c.set_registered_model_alias(name, alias, str(info["version"]))


def promote(name: str, version: int, alias: str = ALIAS, expected: int | None | str = "any",
            also: dict[str, int] | None = None) -> dict[str, Any]:
    """Point an alias (default ``production``) at a version. For ``production`` the old holder is kept in the history
    (for ``rollback``) and gets ``previous_production``. ``expected``: a compare-and-set, the version the caller saw
    holding the alias (None = no holder); when it moved meanwhile nothing changes and ``changed`` is False with the
    ``reason``. ``also``: other aliases set in the same step (the loop's ``challenger``). The read, the check and the
    moves happen under ``alias_lock``."""
    with alias_lock(name):
        c = client()
        rm = _registered(c, name)
        info = get_version(name, str(version))
        current = (rm.aliases or {}).get(alias)
        current = int(current) if current is not None else None
        for other, v in (also or {}).items():
            c.set_registered_model_alias(name, other, str(get_version(name, str(v))["version"]))
        if expected != "any" and current != expected:
            return {"name": name, "alias": alias, "version": current, "previous": current, "changed": False,
                    "reason": f"{alias} moved to version {current} while this ran (it was "
                              f"{expected if expected is not None else 'unset'})"}
        if current is not None and current == int(version):
            return {"name": name, "alias": alias, "version": int(version), "previous": current, "changed": False}
        if alias == ALIAS and current is not None:
            c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(_history(rm) + [current]))
            c.set_registered_model_alias(name, PREVIOUS_ALIAS, str(current))
        c.set_registered_model_alias(name, alias, str(info["version"]))
        return {"name": name, "alias": alias, "version": int(version), "previous": current, "changed": True}


def rollback(name: str) -> dict[str, Any]:
    """Give ``production`` back to the version that held it before the last promote."""
    with alias_lock(name):
        c = client()
        rm = _registered(c, name)
        history = _history(rm)
        if not history:
            raise RegistryError(f"model {name!r}: no earlier production version to roll back to")
        previous = history.pop()
        current = (rm.aliases or {}).get(ALIAS)
        c.set_registered_model_alias(name, ALIAS, str(previous))
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        if history:
            c.set_registered_model_alias(name, PREVIOUS_ALIAS, str(history[-1]))
        elif PREVIOUS_ALIAS in (rm.aliases or {}):
            c.delete_registered_model_alias(name, PREVIOUS_ALIAS)
    return {"name": name, "alias": ALIAS, "version": previous,
            "previous": int(current) if current is not None else None, "changed": True}
