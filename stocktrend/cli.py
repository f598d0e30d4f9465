"""The ``stocktrend`` command. Thin: parses flags, calls library functions, prints summaries.

Errors a user can fix (bad files, unknown tickers, impossible configs) are printed as one ``error:`` line with exit
code 2, never as a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, tune and serve stock-trend models on Ray (not financial advice).")
data_app = typer.Typer(no_args_is_help=True, help="Build and inspect data sets.")
app.add_typer(data_app, name="data")
models_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry: versions and the production alias.")
app.add_typer(models_app, name="models")

STATE = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors in the log.")) -> None:
    STATE["debug"] = debug
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not debug:
        # Lightning logs its banners (GPU available, tips) through its own handler *and* ours; the progress bar and
        # our summary say what matters.
        for name in ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _split_list(value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _fractions(value: str) -> tuple[float, float, float]:
    parts = [float(p) for p in value.split(",")]
    if len(parts) != 3:
        raise typer.BadParameter("give three comma-separated fractions, e.g. 0.8,0.1,0.1")
    return parts[0], parts[1], parts[2]


def format_summary(s: dict) -> str:
    lines = [f"tickers      : {', '.join(s['tickers'])}  ({s['rows']} rows after warm-up)",
             f"label        : {s['label_kind']}, horizon {s['horizon']} days; windows of {s['sequence_length']} days",
             f"features     : {s['features_kept']} kept of {s['features_total']} "
             f"(top: {', '.join(s['selected'][:5])}{' ...' if len(s['selected']) > 5 else ''})"]
    for seg, info in s["segments"].items():
        counts = ", ".join(f"{k} {v}" for k, v in info["class_counts"].items())
        extra = ""
        if seg == "train" and "before_oversampling" in info:
            before = ", ".join(f"{k} {v}" for k, v in info["class_counts_before_oversampling"].items())
            extra = f"; before oversampling {info['before_oversampling']} ({before})"
        lines.append(f"{seg:<13}: {info['dates'][0]} .. {info['dates'][1]}  {info['samples']} samples ({counts})"
                     f"{extra}; purged {info['purged']}, embargoed {info['embargoed']}")
    lines.append(f"cache        : {s['cache_path']} ({'hit' if s['cache_hit'] else 'built'}); data hash "
                 f"{s['data_hash']}")
    return "\n".join(lines)


@data_app.command("build")
def data_build(
    ticker: Optional[str] = typer.Option(None, "--ticker", "-t",
                                         help="Target ticker(s), comma-separated (default: MSFT embedded, or every "
                                              "file of --data)."),
    data: Optional[str] = typer.Option(None, "--data", help="Directory of CSV/Parquet files (default: embedded)."),
    market: Optional[str] = typer.Option(None, help="Embedded market series, comma-separated (default SP500,NASDAQ)."),
    indicators: Optional[str] = typer.Option(None, help="Embedded indicators, comma-separated (e.g. VIX)."),
    sequence_length: int = typer.Option(30, min=1, help="Days per input window."),
    horizon: int = typer.Option(5, min=1, help="Forward-return horizon of the label (days)."),
    label: str = typer.Option("binary", help="binary | ternary | regression."),
    top_k: int = typer.Option(50, min=0, help="Features kept (0 = all)."),
    split: str = typer.Option("0.8,0.1,0.1", help="Train,val,test fractions of the timeline."),
    embargo: int = typer.Option(5, min=0, help="Days of embargo after each purged boundary."),
    cache_dir: Optional[str] = typer.Option(None, help="Feature cache directory (default $STOCKTREND_HOME/cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features and do not write the cache."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Build the data set and print a summary (splits, class balance, features, purge counts, cache)."""
    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    if label not in ("binary", "ternary", "regression"):
        raise typer.BadParameter(f"unknown label kind {label!r}; use binary, ternary or regression")
    cfg = DataConfig(tickers=_split_list(ticker) or (), data_dir=data, market=_split_list(market),
                     indicators=_split_list(indicators) or (), horizon=horizon, label_kind=label,
                     sequence_length=sequence_length, top_k=top_k, fractions=_fractions(split), embargo=embargo)
    prepared = build_dataset(cfg, cache_dir=cache_dir, use_cache=not no_cache)
    summary = prepared.summary()
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


def _data_config(ticker, data, market, indicators, sequence_length, horizon, label, top_k, split, embargo):
    from stocktrend.platform.data.dataset import DataConfig
    if label not in ("binary", "ternary", "regression"):
        raise typer.BadParameter(f"unknown label kind {label!r}; use binary, ternary or regression")
    return DataConfig(tickers=_split_list(ticker) or (), data_dir=data, market=_split_list(market),
                      indicators=_split_list(indicators) or (), horizon=horizon, label_kind=label,
                      sequence_length=sequence_length, top_k=top_k, fractions=_fractions(split), embargo=embargo)


@app.command("train")
def train_cmd(
    preset: str = typer.Option("small", help="Model preset: small (CPU), seed (the seeds' 7.7M network), tiny."),
    epochs: int = typer.Option(30, min=1, help="Maximum epochs (early stopping: patience 15 on val_loss)."),
    batch_size: int = typer.Option(64, min=1),
    ticker: Optional[str] = typer.Option(None, "--ticker", "-t", help="Target ticker(s), comma-separated."),
    data: Optional[str] = typer.Option(None, "--data", help="Directory of CSV/Parquet files (default: embedded)."),
    sequence_length: int = typer.Option(30, min=1),
    horizon: int = typer.Option(5, min=1),
    label: str = typer.Option("binary", help="binary | ternary | regression."),
    top_k: int = typer.Option(50, min=0),
    split: str = typer.Option("0.8,0.1,0.1", help="Train,val,test fractions of the timeline."),
    embargo: int = typer.Option(5, min=0),
    lr: float = typer.Option(2e-4, help="AdamW learning rate (OneCycle start)."),
    max_lr: float = typer.Option(1e-3, help="OneCycle peak learning rate."),
    accumulate: int = typer.Option(4, min=1, help="Gradient accumulation steps."),
    patience: int = typer.Option(15, min=1, help="Early-stopping patience (epochs, on val_loss)."),
    monitor: str = typer.Option("val_loss", help="Best-checkpoint metric (val_loss, val_auc, val_acc, ...)."),
    accelerator: str = typer.Option("auto", help="auto (cuda > mps > cpu) | cpu | cuda | mps."),
    precision: str = typer.Option("auto", help="auto (bf16-mixed where fast) | 32-true | bf16-mixed | 16-mixed."),
    seed: int = typer.Option(42),
    model_name: str = typer.Option("stocktrend", help="Registered model name in MLflow."),
    finetune: Optional[str] = typer.Option(None, help="Fine-tune from NAME[@ALIAS|@VERSION] or a checkpoint file "
                                                      "(learning rates x0.1)."),
    no_register: bool = typer.Option(False, "--no-register", help="Do not log to MLflow or register the model."),
    workers: int = typer.Option(0, min=0, help="Ray Train workers (DDP); 0 = local training without Ray."),
    cpus_per_worker: float = typer.Option(1.0, min=0.0, help="Ray: CPUs per worker."),
    gpus_per_worker: float = typer.Option(0.0, min=0.0, help="Ray: GPUs per worker (> 0 trains on CUDA)."),
    storage: Optional[str] = typer.Option(None, help="Ray: run storage, local dir or s3://... / NFS path shared by "
                                          "all nodes (default $STOCKTREND_HOME/ray)."),
    max_failures: int = typer.Option(1, min=0, help="Ray: worker-group restarts from the last checkpoint."),
    keep_checkpoints: int = typer.Option(2, min=1, help="Ray: best checkpoints kept by --monitor."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: $RAY_ADDRESS, else local)."),
    data_transport: str = typer.Option("object-store", help="Ray: how workers get the data: object-store | "
                                       "shared-path (the feature cache on shared storage)."),
    start_timeout: float = typer.Option(30.0, min=1.0, help="Ray: seconds the workers may take to start (2 attempts) "
                                        "before the run fails naming what it asked for and what is free."),
) -> None:
    """Train the hybrid model (locally or with Ray Train), log it to MLflow and register the best checkpoint."""
    from stocktrend.platform.training.jobs import train_job
    from stocktrend.platform.training.local import TrainConfig
    cfg = _data_config(ticker, data, None, None, sequence_length, horizon, label, top_k, split, embargo)
    tcfg = TrainConfig(preset=preset, epochs=epochs, batch_size=batch_size, lr=lr, max_lr=max_lr,
                       accumulate=accumulate, patience=patience, monitor=monitor,
                       monitor_mode="min" if monitor.endswith("loss") else "max", accelerator=accelerator,
                       precision=precision, seed=seed)
    ray_config = None
    if workers:
        from stocktrend.platform.training.distributed import RayConfig
        ray_config = RayConfig(workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                               storage=storage, max_failures=max_failures, keep_checkpoints=keep_checkpoints,
                               address=address, data_transport=data_transport, start_timeout_s=start_timeout)
    if workers:
        from stocktrend.platform import console
        console.setup("train", STATE["debug"])
    with _interruptible("train"):
        out = train_job(cfg, tcfg, model_name=model_name, register=not no_register, finetune_from=finetune,
                        ray_config=ray_config)
    _finish()
    r = out.fit
    typer.echo("")
    typer.echo(f"trained      : {tcfg.preset} preset, {sum(p.numel() for p in r.module.parameters()):,} parameters, "
               f"{r.epochs_run} epoch(s) in {out.seconds:.0f} s; best {tcfg.monitor} {r.best_score:.4f} "
               f"at epoch {r.best_epoch}" if r.best_score is not None else "trained (no validation score)")
    if r.test_metrics:
        typer.echo("test         : " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in r.test_metrics.items()))
        counts = out.data.class_counts("test")
        if counts:
            typer.echo(f"majority rate: {max(counts.values()) / sum(counts.values()):.3f} on the same test segment "
                       f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    typer.echo(f"checkpoint   : {out.checkpoint_path}")
    if out.version is not None:
        typer.echo(f"registered   : {out.model_name} version {out.version} (run {out.run_id}); promote with "
                   f"'stocktrend models promote {out.model_name} {out.version}'")
    typer.echo(f"next         : stocktrend evaluate {out.model_name + '@' + str(out.version) if out.version else out.checkpoint_path}")


@app.command("predict")
def predict_cmd(
    model: str = typer.Argument(..., help="Checkpoint file or NAME[@ALIAS|@VERSION] from the registry."),
    csv: str = typer.Option(..., "--csv", help="OHLCV price file (.csv or .parquet) of the ticker."),
    market_dir: Optional[str] = typer.Option(None, "--market-dir", help="Directory of market series files named as "
                                             "at training (default: the embedded ones, if the model used them)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict the trend from the last window of a price file: probabilities, label and BUY/SELL signal."""
    from pathlib import Path

    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.jobs import resolve_model
    from stocktrend.platform.data.sources import load_embedded, load_price_file, load_universe
    path, _ = resolve_model(model)
    pred = Predictor.load(path)
    prices = load_price_file(csv)
    if market_dir:
        market = {p.stem: load_price_file(p, required=("close",)) for p in sorted(Path(market_dir).iterdir())
                  if p.suffix.lower() in (".csv", ".parquet", ".pq")}
    elif pred.data_config.data_dir:
        market = load_universe(pred.data_config.data_dir).market
    else:
        market = load_embedded(market=list(pred.data_config.market) if pred.data_config.market is not None
                               else None).market
    out = pred.predict_prices(prices, market)
    last_day = str(prices.index[-1].date())
    if as_json:
        typer.echo(json.dumps({"date": last_day, "probabilities": dict(zip(pred.class_names, out.probabilities[0])),
                               "label": out.labels[0], "signal": out.signals[0],
                               "confidence": out.confidence[0]}, indent=2))
        return
    probs = ", ".join(f"{n} {p:.3f}" for n, p in zip(pred.class_names, out.probabilities[0]))
    typer.echo(f"{last_day}: {out.labels[0]} -> {out.signals[0]} (confidence {out.confidence[0]:.3f}; {probs}; "
               f"horizon {pred.data_config.horizon} days). Not financial advice.")


@models_app.command("list")
def models_list(name: str = typer.Argument("stocktrend")) -> None:
    """Versions of a registered model with their aliases and test metrics."""
    from stocktrend.platform.registry import mlflow_registry as registry
    for v in registry.list_versions(name):
        metrics = ", ".join(f"{k} {v2}" for k, v2 in v["metrics"].items() if k.startswith("test_"))
        aliases = f" [{', '.join(v['aliases'])}]" if v["aliases"] else ""
        typer.echo(f"{name} v{v['version']}{aliases}  run {v['run_id']}  {v['description']}  {metrics}")


@models_app.command("show")
def models_show(spec: str = typer.Argument("stocktrend", help="NAME[@ALIAS|@VERSION]")) -> None:
    """One version: registry entry plus what its checkpoint holds (config, features, metrics, data hash)."""
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import read_checkpoint
    name, ref = registry.parse_spec(spec)
    path, info = registry.download(name, ref)
    ckpt = read_checkpoint(path)
    typer.echo(json.dumps({**{k: info[k] for k in ("version", "aliases", "run_id", "source", "description")},
                           "model_config": ckpt["model_config"], "data_config": ckpt["data_config"],
                           "label_kind": ckpt["label_kind"], "sequence_length": ckpt["sequence_length"],
                           "horizon": ckpt["horizon"], "data_hash": ckpt["data_hash"],
                           "selected_features": ckpt["transforms"]["selected"], "metrics": ckpt["metrics"]},
                          indent=2))


@models_app.command("promote")
def models_promote(name: str = typer.Argument(...), version: int = typer.Argument(...),
                   alias: str = typer.Option("production")) -> None:
    """Point an alias (default production) at a version; the previous holder is kept for rollback."""
    from stocktrend.platform.registry import mlflow_registry as registry
    r = registry.promote(name, version, alias)
    typer.echo(f"{name}@{alias} -> version {r['version']}" + (f" (was {r['previous']})" if r["previous"] else "")
               + ("" if r["changed"] else " (unchanged)"))


@models_app.command("rollback")
def models_rollback(name: str = typer.Argument("stocktrend")) -> None:
    """Give the production alias back to the version that held it before the last promote."""
    from stocktrend.platform.registry import mlflow_registry as registry
    r = registry.rollback(name)
    typer.echo(f"{name}@production -> version {r['version']} (was {r['previous']})")


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Argument(..., help="Checkpoint file or NAME[@ALIAS|@VERSION] from the registry."),
    out: Optional[str] = typer.Option(None, help="Report directory (default $STOCKTREND_HOME/reports/<model>)."),
    threshold: float = typer.Option(0.5, help="Backtest: long when P(Alcista) > threshold."),
    cost_bps: float = typer.Option(5.0, help="Backtest: cost per side in basis points."),
    short: bool = typer.Option(False, "--short", help="Backtest: short instead of flat below the threshold."),
    walk_forward: int = typer.Option(0, min=0, help="Also run K walk-forward folds (retrains per fold)."),
    leakage_audit: bool = typer.Option(False, "--leakage-audit", help="Also run the seeds' protocol next to the "
                                       "honest one (retrains twice)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epoch cap when retraining (walk-forward, audit)."),
) -> None:
    """Score a model next to baselines on the untouched test segment; backtest; Markdown + PNG report."""
    from stocktrend.platform.evaluation.report import EvalOptions, evaluate
    res = evaluate(model, out, EvalOptions(threshold=threshold, cost_bps=cost_bps, allow_short=short,
                                           walk_forward=walk_forward, leakage_audit=leakage_audit, epochs=epochs))
    m = res["scores"]["model"]
    typer.echo(f"model        : acc {m['accuracy']:.3f}, balanced acc {m['balanced_accuracy']:.3f}, AUC {m['auc']:.3f} "
               f"(95% CI {m['auc_ci'][0]:.3f}-{m['auc_ci'][1]:.3f}), MCC {m['mcc']:.3f}")
    for name, s in res["scores"].items():
        if name != "model":
            typer.echo(f"{name:<13}: acc {s['accuracy']:.3f}, balanced acc {s['balanced_accuracy']:.3f}, "
                       f"AUC {s['auc']:.3f}")
    bt = res["backtest"]
    typer.echo(f"backtest     : Sharpe {bt['model']['sharpe']:.2f} vs buy-and-hold {bt['buy_and_hold']['sharpe']:.2f}"
               f" (annual {bt['model']['annual_return']:+.1%} vs {bt['buy_and_hold']['annual_return']:+.1%})")
    for line in res["verdict"]:
        typer.echo(f"verdict      : {line}")
    typer.echo(f"report       : {res['report']}")


@app.command("serve")
def serve_cmd(
    model: str = typer.Option("stocktrend@production", "--model", help="NAME@ALIAS, NAME@VERSION or a checkpoint."),
    host: str = typer.Option("127.0.0.1", help="Bind address (0.0.0.0 to listen on every interface)."),
    port: int = typer.Option(8000, help="HTTP port."),
    max_replicas: int = typer.Option(2, min=1, help="Autoscaling upper bound."),
    request_timeout_s: float = typer.Option(30.0, help="Per-request timeout."),
    backend: str = typer.Option("onnx", help="Inference backend: torch, torch-bf16, onnx, onnx-int8 (falls back to "
                                "torch, with the reason in /model, when it cannot be built)."),
    num_cpus: float = typer.Option(1.0, help="CPUs per replica (whole CPUs = its inference threads)."),
    python_proxy: bool = typer.Option(False, "--python-proxy", help="Use Ray's Python HTTP proxy instead of the "
                                      "HAProxy ingress."),
) -> None:
    """Serve the model over HTTP with Ray Serve (Ctrl-C stops it). Routes: /predict, /predict/ticker, /model,
    /healthz, /docs; metrics on Ray's metrics endpoint."""
    import os

    from ray import serve

    from stocktrend.platform.training.distributed import init_ray
    from stocktrend.serve.app import app_builder
    from stocktrend.serve.ingress import configure_ingress, metrics_url
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ingress = configure_ingress(python_proxy)
    init_ray()
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s})
    serve.run(app_builder({"model": model, "max_replicas": max_replicas, "backend": backend, "num_cpus": num_cpus}),
              name="stocktrend", route_prefix="/", blocking=False)
    typer.echo(f"serving {model} at http://{host}:{port} with the {backend} backend through the {ingress} ingress "
               f"(docs: http://{host}:{port}/docs; Ctrl-C stops)")
    typer.echo(f"metrics: {metrics_url()} (Prometheus text: Ray Serve's and the platform's, all replicas of this "
               f"node)")
    try:
        import time
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


@app.command("quickstart")
def quickstart_cmd(
    budget: float = typer.Option(1.0, help="Scales the search: 1.0 = 6 trials of up to 6 epochs (about 5 minutes on "
                                 "2 cores); 0.3 = 2 trials of 2 epochs."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start the endpoint and send sample requests."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Keep serving until Ctrl-C (--no-wait: stop after the "
                              "sample requests)."),
    host: str = typer.Option("127.0.0.1", help="Endpoint bind address."),
    port: int = typer.Option(8000, help="Endpoint port."),
    model_name: str = typer.Option("stocktrend", help="Registered model name (its production alias is moved)."),
    workers: int = typer.Option(2, min=1, help="Ray Train workers for the final retrain."),
    preset: str = typer.Option("small", help="Search space and model preset (small; tiny for smoke tests)."),
    name: Optional[str] = typer.Option(None, help="Search name (default quickstart-<time>)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's trial table and logs on the console."),
    python_proxy: bool = typer.Option(False, "--python-proxy", help="Serve through Ray's Python HTTP proxy instead "
                                      "of the HAProxy ingress."),
    nested_train: bool = typer.Option(False, "--nested-train", hidden=True,
                                      help="Trials through nested Ray Train runs, one at a time (the old, slower "
                                           "path; for benchmarks)."),
) -> None:
    """The main job in one command on the embedded data: build the data set -> Ray Tune + Optuna + ASHA search ->
    retrain the best config with Ray Train -> evaluate next to baselines -> register + promote -> Ray Serve ->
    sample requests on both routes."""
    from stocktrend.platform import console
    from stocktrend.quickstart import QuickstartOptions, run_quickstart, serve_forever
    opts = QuickstartOptions(budget=budget, serve=serve, wait=wait, host=host, port=port, model_name=model_name,
                             preset=preset, workers=workers, name=name, verbose=verbose, nested_train=nested_train,
                             python_proxy=python_proxy)
    console.setup("quickstart", verbose)
    with _interruptible("quickstart"):
        run_quickstart(opts, typer.echo)
        if serve and wait:
            serve_forever()
        elif serve:
            from ray import serve as ray_serve
            ray_serve.shutdown()
            typer.echo("endpoint stopped (--no-wait)")
    _finish()


@app.command("tune", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def tune_cmd(ctx: typer.Context) -> None:
    """Ray Tune + Optuna + ASHA search (same flags as python -m stocktrend.tune.search; --help lists them)."""
    from stocktrend.tune.search import main as search_main
    raise typer.Exit(search_main(list(ctx.args)))


@contextmanager
def _interruptible(command: str):
    """One Ctrl-C ends the command: say what was kept, shut down the Ray instance this process started (no Ray
    process of the run is left), exit 130. Errors shut it down too, so nothing is left behind either way."""
    from stocktrend.platform import console
    from stocktrend.platform.training.distributed import shutdown_ray
    from stocktrend.tune.search import SearchInterrupted
    try:
        yield
    except SearchInterrupted as exc:
        typer.echo(f"\ninterrupted: {exc.summary}", err=True)
        _exit_now(130, shutdown_ray)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: {command} stopped by Ctrl-C{console.where()}", err=True)
        _exit_now(130, shutdown_ray)
    except BaseException:
        shutdown_ray()
        raise


def _exit_now(code: int, shutdown) -> None:
    """Shut Ray down and leave at once: a helper thread may still be blocked in a Ray call, and a normal interpreter
    exit would wait for it."""
    import os
    try:
        shutdown()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _finish() -> None:
    from stocktrend.platform.training.distributed import shutdown_ray
    shutdown_ray()


def main() -> None:
    from stocktrend.platform.registry.checkpoint import CheckpointError
    from stocktrend.platform.training.distributed import DistributedTrainingError
    from stocktrend.platform.registry.mlflow_registry import RegistryError
    from stocktrend.platform.data.sources import DataValidationError
    try:
        app()
    except (DataValidationError, CheckpointError, RegistryError, DistributedTrainingError, ValueError,
            FileNotFoundError, RuntimeError) as exc:
        if STATE["debug"]:
            raise
        from stocktrend.platform import console
        typer.echo(f"error: {exc}{console.where()}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
