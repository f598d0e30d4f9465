"""``stocktrend train``, ``serve`` and ``quickstart``: the commands that start work (and Ray); ``tune`` is in
``stocktrend/cli/tune.py``."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import typer

from stocktrend.cli.common import STATE, _finish, _interruptible, app
from stocktrend.cli.data import data_config, features_option, ticker_id_option, universe_option
from stocktrend.models import DEFAULT_KIND
from stocktrend.platform.training import AVERAGE_HALFLIFE
from stocktrend.quickstart import DEFAULT_UNIVERSE

@app.command("train")
def train_cmd(
    preset: str = typer.Option("small", help="Model preset: small (CPU), seed (the seeds' 7.7M network), tiny."),
    epochs: int = typer.Option(30, min=1, help="Maximum epochs (early stopping: patience 15 on val_loss)."),
    batch_size: int = typer.Option(64, min=1),
    ticker: Optional[str] = typer.Option(None, "--ticker", "-t", help="Target ticker(s), comma-separated."),
    universe: str = universe_option(),
    data: Optional[str] = typer.Option(None, "--data", help="Directory of CSV/Parquet files (default: embedded)."),
    ticker_id: bool = ticker_id_option(),
    model: str = typer.Option(DEFAULT_KIND, "--model", "-m", help="hybrid | lstm | dual_tower | lstm_transformer "
                              "(regresses the return) | mtl_lstm (classes + return) | rf | gbm (scikit-learn)."),
    sequence_length: Optional[int] = typer.Option(None, min=1, help="Days per window (default 30, or the universe's "
                                                  "own)."),
    horizon: int = typer.Option(5, min=1),
    label: str = typer.Option("auto", help="auto (excess on a panel of 3+ tickers, binary otherwise) | binary | "
                              "ternary | regression; market-neutral (panels): excess | excess_regression | rank."),
    top_k: Optional[int] = typer.Option(None, min=0, help="Features kept (0 = all); default: the universe's."),
    split: Optional[str] = typer.Option(None, help="Train,val,test fractions of the timeline (default 0.8,0.1,0.1, "
                                        "or the universe's own)."),
    features: Optional[str] = features_option(),
    embargo: int = typer.Option(5, min=0),
    lr: float = typer.Option(2e-4, help="AdamW learning rate (OneCycle start)."),
    max_lr: float = typer.Option(1e-3, help="OneCycle peak learning rate."),
    accumulate: int = typer.Option(4, min=1, help="Gradient accumulation steps."),
    patience: int = typer.Option(15, min=1, help="Early-stopping patience (epochs without a better --monitor)."),
    monitor: str = typer.Option("auto", help="Validation metric that picks the best checkpoint and stops early: auto "
                                "(val_rank_ic on a panel of 3+ tickers, val_loss otherwise) | val_loss | val_rank_ic "
                                "(the daily cross-sectional rank IC) | val_auc | val_acc | val_mcc | val_mae | ..."),
    average_halflife: float = typer.Option(AVERAGE_HALFLIFE, min=0.0, help="Validate, keep and "
                                           "register an exponential moving average of the weights with this "
                                           "half-life in epochs; 0 = the raw weights (docs/models.md)."),
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
    address: Optional[str] = typer.Option(None, help="Ray cluster to join: host:port, ray://host:port, or auto (the "
                                          "running local cluster); default $RAY_ADDRESS, else a private local "
                                          "instance."),
    data_transport: str = typer.Option("auto", help="Ray: how workers get the data: auto (in memory while the "
                                       "panel's estimated size fits half the available memory, else stream) | "
                                       "object-store | shared-path (the feature cache on shared storage) | stream "
                                       "(features partitioned by ticker, each worker streams its shard of the windows "
                                       "through Ray Data: panels larger than memory; docs/data.md)."),
    start_timeout: float = typer.Option(30.0, min=1.0, help="Ray: seconds the workers may take to start (2 attempts) "
                                        "before the run fails naming what it asked for and what is free."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's, Lightning's and MLflow's output on the "
                                 "console (progress bars included)."),
) -> None:
    """Train a model of the zoo (locally or with Ray Train), log it to MLflow and register the best checkpoint as an
    MLflow Model."""
    from stocktrend.platform.data.transport import TRANSPORTS
    if data_transport not in TRANSPORTS:
        raise typer.BadParameter(f"unknown --data-transport {data_transport!r}; choose {', '.join(TRANSPORTS)}")
    if data_transport not in ("auto", "object-store") and not workers:
        raise typer.BadParameter(f"--data-transport {data_transport} is how Ray Train workers get the data: add "
                                 f"--workers N")
    if workers:
        from stocktrend.platform.training.ray_address import check_address
        check_address(address)  # a dead cluster is one line now, not after the data set is built
    from stocktrend.platform.training.jobs import train_job
    from stocktrend.platform.training.local import MONITORS, TrainConfig, mode_of
    if monitor not in MONITORS:
        raise typer.BadParameter(f"unknown --monitor {monitor!r}; choose from {', '.join(MONITORS)}")
    cfg = data_config(ticker, data, None, None, sequence_length, horizon, label, top_k, split, embargo, universe,
                      ticker_id, features)
    from stocktrend.models import zoo
    spec = zoo.get(model)  # the name is resolved once; downstream gets the spec (TrainConfig keeps the plain name)
    if preset not in spec.presets:
        raise typer.BadParameter(f"unknown preset {preset!r} for {model}; available: {', '.join(spec.presets)}")
    tcfg = TrainConfig(preset=preset, model=spec.kind, epochs=epochs, batch_size=batch_size, lr=lr, max_lr=max_lr,
                       accumulate=accumulate, patience=patience, monitor=monitor, monitor_mode=mode_of(monitor),
                       accelerator=accelerator, precision=precision, seed=seed, average_halflife=average_halflife)
    ray_config = None
    if workers:
        from stocktrend.platform.training.distributed import RayConfig
        ray_config = RayConfig(workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                               storage=storage, max_failures=max_failures, keep_checkpoints=keep_checkpoints,
                               address=address, data_transport=data_transport, start_timeout_s=start_timeout)
    if verbose:
        from stocktrend.platform import console
        console.setup("train", True)
    tcfg = replace(tcfg, progress=verbose or STATE["verbose"])
    with _interruptible("train"):
        out = train_job(cfg, tcfg, model_name=model_name, register=not no_register, finetune_from=finetune,
                        ray_config=ray_config)
    _finish()
    r = out.fit
    typer.echo("")
    size = ("scikit-learn" if spec.is_sklearn else
            f"{sum(p.numel() for p in r.module.parameters()):,} parameters")
    # scikit-learn models report their boosting iterations (gbm's trees, picked on validation) as epochs
    length = f"{r.epochs_run} tree(s)" if spec.is_sklearn else f"{r.epochs_run} epoch(s)"
    where = "" if spec.is_sklearn else f" at epoch {r.best_epoch}"
    typer.echo(f"trained      : {model}, {tcfg.preset} preset, {size}, {length} in {out.seconds:.0f} s; "
               f"best {r.train_config.monitor} {r.best_score:.4f}{where}" if r.best_score is not None
               else f"trained      : {model} (no validation score)")
    if r.test_metrics:
        typer.echo("test         : " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in r.test_metrics.items()))
        counts = out.data.class_counts("test")
        if counts:
            typer.echo(f"majority rate: {max(counts.values()) / sum(counts.values()):.3f} on the same test segment "
                       f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    if out.transport:
        typer.echo(f"data         : {out.transport}")
    typer.echo(f"checkpoint   : {out.checkpoint_path}")
    if out.version is not None:
        from stocktrend.platform.registry import mlflow_registry as registry
        typer.echo(f"registered   : {out.model_name} version {out.version} (run {out.run_id})")
        served = registry.aliases(out.model_name).get(registry.ALIAS)
        if served == out.version:
            typer.echo(f"served       : {out.model_name}@production = version {out.version} (the first version takes "
                       f"production): stocktrend serve serves it")
        else:
            typer.echo(f"served       : {out.model_name}@production stays version {served}; this version is not served "
                       f"until it passes the gate (stocktrend retrain) or is promoted (stocktrend models promote "
                       f"{out.model_name} {out.version})")
    ref = f"{out.model_name}@{out.version}" if out.version else out.checkpoint_path
    typer.echo(f"next         : stocktrend evaluate {ref}")



@app.command("serve")
def serve_cmd(
    model: str = typer.Option("stocktrend@production", "--model", help="NAME@ALIAS, NAME@VERSION or a checkpoint."),
    host: str = typer.Option("127.0.0.1", help="Bind address (0.0.0.0 to listen on every interface)."),
    port: int = typer.Option(8000, help="HTTP port."),
    max_replicas: int = typer.Option(2, min=1, help="Autoscaling upper bound."),
    min_replicas: int = typer.Option(1, min=1, help="Autoscaling lower bound (= --max-replicas for a fixed count)."),
    request_timeout_s: float = typer.Option(30.0, help="Per-request timeout."),
    backend: str = typer.Option("onnx", help="Inference backend: torch, torch-bf16, onnx, onnx-int8 (falls back to "
                                "torch, with the reason in /model, when it cannot be built)."),
    num_cpus: float = typer.Option(1.0, help="CPUs per replica (whole CPUs = its inference threads)."),
    challenger: Optional[str] = typer.Option(None, "--challenger", help="A second model (NAME@ALIAS|@VERSION, e.g. "
                                             "stocktrend@challenger) that answers --split of the traffic or shadows "
                                             "all of it; it must answer the same requests."),
    split: float = typer.Option(0.0, "--split", help="Share of requests the challenger answers (0..1), sticky per "
                                "ticker / X-Stocktrend-Key header."),
    shadow: bool = typer.Option(False, "--shadow", help="The champion answers every request; the challenger gets a "
                                "copy off the request path."),
    challenger_routes: str = typer.Option("all", "--challenger-routes", help="all, or ticker: a challenger whose "
                                          "inputs differ (a retrain that selected other features) answers "
                                          "/predict/ticker only; /predict windows stay with the champion."),
    python_proxy: bool = typer.Option(False, "--python-proxy", help="Use Ray's Python HTTP proxy instead of the "
                                      "HAProxy ingress."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join: host:port, ray://host:port, or auto (the "
                                          "running local cluster); default $RAY_ADDRESS, else a private local "
                                          "instance."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray Serve's own logs on the console."),
) -> None:
    """Serve the model over HTTP with Ray Serve (Ctrl-C stops it). Routes: /predict, /predict/ticker, /model,
    /healthz, /docs; metrics on Ray's metrics endpoint."""
    import os

    from pathlib import Path

    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.quickstart import port_free
    from stocktrend.serve.config import BACKENDS
    if verbose:
        from stocktrend.platform import console
        console.setup("serve", True)
    if backend not in BACKENDS:
        raise typer.BadParameter(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not 0 <= split <= 1:
        raise typer.BadParameter(f"--split {split} is outside [0, 1]")
    if (split or shadow) and not challenger:
        raise typer.BadParameter("--split and --shadow need a --challenger")
    if split and shadow:
        raise typer.BadParameter("give --split p or --shadow, not both")
    if min_replicas > max_replicas:
        raise typer.BadParameter(f"--min-replicas {min_replicas} is above --max-replicas {max_replicas}")
    if challenger_routes not in ("all", "ticker"):
        raise typer.BadParameter("--challenger-routes is all or ticker")
    from stocktrend.platform.training.ray_address import check_address
    check_address(address)
    if not port_free(host, port):
        raise ValueError(f"port {port} on {host} is in use (another endpoint? stocktrend serve --port N picks "
                         f"another)")
    # What the replicas will load must exist before Ray starts: an unknown model is one line in a second or two, not a
    # failed deployment after 40 s.
    from stocktrend.platform.registry.checkpoint import Predictor
    if Path(model).suffix in (".pt", ".ckpt") or Path(model).exists():
        if not Path(model).is_file():
            raise ValueError(f"{model}: no such checkpoint file")
        path = Path(model)
    else:
        info = registry.get_version(*registry.parse_spec(model))
        typer.echo(f"model        : {model} = version {info['version']} ({info['model_kind']}, label "
                   f"{info['label_kind'] or '?'})")
        path, _ = registry.download(*registry.parse_spec(model))
    champion_pred = Predictor.load(path)  # a corrupt or unsafe file is one CheckpointError line here, not a failed
    if challenger:                        # deployment; and a challenger that cannot answer the same requests too
        from stocktrend.serve.routing import incompatibility
        cinfo = registry.get_version(*registry.parse_spec(challenger))
        cpath, _ = registry.download(*registry.parse_spec(challenger))
        cpred = Predictor.load(cpath)
        why = incompatibility(_inputs_of(champion_pred), _inputs_of(cpred), challenger_routes)
        if why:
            hint = ("" if challenger_routes == "ticker" or incompatibility(_inputs_of(champion_pred),
                                                                          _inputs_of(cpred), "ticker") else
                    "; with --challenger-routes ticker it answers /predict/ticker, where each model builds its own "
                    "inputs")
            raise ValueError(f"challenger {challenger} (version {cinfo['version']}) cannot answer the champion's "
                             f"requests: {why}{hint}")
        typer.echo(f"challenger   : {challenger} = version {cinfo['version']} ("
                   f"{'shadow' if shadow else f'{split:.0%} of requests'})")
    from ray import serve

    from stocktrend.platform.training.distributed import init_ray
    from stocktrend.serve.app import app_builder
    from stocktrend.serve.ingress import configure_ingress, metrics_url, start_endpoint
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ingress = configure_ingress(python_proxy)
    if verbose or STATE["verbose"]:  # the fast ingress's mode keeps Serve's logs off stderr; --verbose wants them
        os.environ["RAY_SERVE_LOG_TO_STDERR"] = "1"
    owned = init_ray(address)
    if owned:  # a private instance cannot grow: replicas it cannot place would wait forever in serve.run
        import ray
        need = min_replicas * num_cpus + (num_cpus if challenger else 0)
        have = ray.cluster_resources().get("CPU", 0)
        if need > have:
            raise ValueError(f"{min_replicas} replica(s){' and a challenger replica' if challenger else ''} of "
                             f"{num_cpus:g} CPU need {need:g} CPUs; the local Ray instance has {have:g}: lower "
                             f"--min-replicas or --num-cpus (fractions work, e.g. --num-cpus 0.5)")
    started = False
    try:
        start_endpoint(app_builder({"model": model, "min_replicas": min_replicas, "max_replicas": max_replicas,
                                    "backend": backend, "num_cpus": num_cpus,
                                    **({"challenger": challenger, "challenger_split": split, "shadow": shadow,
                                        "challenger_routes": challenger_routes} if challenger else {})}),
                       host, port, request_timeout_s)
        started = True
        from stocktrend.serve.ingress import exposure_line
        exposed = exposure_line(host, port)
        if exposed:
            typer.echo(exposed)
        typer.echo(f"serving {model} at http://{host}:{port} with the {backend} backend through the {ingress} "
                   f"ingress (docs: http://{host}:{port}/docs; Ctrl-C stops)")
        typer.echo(f"metrics: {metrics_url()} (Prometheus text: Ray Serve's and the platform's, all replicas of "
                   f"this node)")
        from stocktrend.serve.ingress import keep_serving
        keep_serving()
    except KeyboardInterrupt:
        typer.echo("stopping the endpoint" if started else "interrupted while starting: shutting down")
        serve.shutdown()
        _finish()
        typer.echo("endpoint stopped")
        if not started:
            raise typer.Exit(130)


@app.command("quickstart")
def quickstart_cmd(
    budget: float = typer.Option(1.0, help="Scales the search: 1.0 = 5 trials of up to 6 epochs (the whole command "
                                 "under 2 minutes on 2 cores); 0.3 = 2 trials of 2 epochs."),
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
    universe: str = typer.Option(DEFAULT_UNIVERSE, "--universe", "-u", help="Embedded universe (stocktrend data "
                                 "universes); the default was chosen by walk-forward validation AUC."),
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
                             python_proxy=python_proxy, universe=universe)
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


def _inputs_of(pred) -> dict:
    """A loaded checkpoint's inputs as ``ModelHost.describe_inputs`` gives them (for the start-up check)."""
    t = pred.transforms
    return {"names": list(t.input_names), "seq_len": pred.seq_len, "label_kind": pred.kind.value,
            "class_names": list(pred.class_names), "horizon": int(pred.ckpt["horizon"]), "task": pred.task.value,
            "tickers": sorted(pred.ckpt["tickers"])}
