"""``stocktrend tune`` (also ``python -m stocktrend.tune.search``): Ray Tune + Optuna (TPE) + ASHA over a model of the
zoo, or several (then the model is a search dimension). Flags left out take ``SearchOptions``' defaults (one home:
``stocktrend/tune/options.py``); ``--help`` lists them."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import typer

from stocktrend.cli.common import STATE, app
from stocktrend.tune import SEARCH_METRICS as METRICS


def _one_of(*values: str) -> Callable[[Optional[str]], Optional[str]]:
    """A parse-time check (a bad value fails like a bad flag, before anything runs)."""
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value
    return check


@app.command("tune")
def tune_cmd(
    name: Optional[str] = typer.Option(None, help="Search name: Tune experiment and Optuna study; rerun the same name "
                                       "to resume (default search)."),
    preset: Optional[str] = typer.Option(None, help="Search space / model preset: small (default), seed, tiny."),
    model: Optional[str] = typer.Option(None, help="Model kind (hybrid, lstm, dual_tower, lstm_transformer, mtl_lstm, "
                                        "rf, gbm), or several comma-separated: then the model is a search dimension."),
    num_samples: Optional[int] = typer.Option(None, min=1, help="Trials (default 8)."),
    max_epochs: Optional[int] = typer.Option(None, min=1, help="ASHA max_t: epochs of a trial that runs to the end "
                                             "(default 12)."),
    grace_period: Optional[int] = typer.Option(None, min=1, help="ASHA: epochs before a trial can be stopped "
                                               "(default 2)."),
    epoch_windows: Optional[int] = typer.Option(None, help="Training windows per trial epoch, a fresh random draw "
                                                "each epoch (default 0: all); caps what an epoch costs on a large "
                                                "panel."),
    reduction_factor: Optional[int] = typer.Option(None, min=2, help="ASHA reduction factor (default 2)."),
    metric: Optional[str] = typer.Option(None, callback=_one_of(*METRICS), help="What trials are ranked, stopped "
                                         "(ASHA) and checkpointed by: val_loss (default) | val_rank_ic (a panel's "
                                         "daily cross-sectional rank IC) | val_auc | val_acc | val_mcc | val_mae."),
    max_concurrent: Optional[int] = typer.Option(None, min=0, help="Trials at once (default 0: as many as the "
                                                 "cluster has CPUs for)."),
    workers_per_trial: Optional[int] = typer.Option(None, min=1, help="1 (default): train in the trial's own "
                                                    "process; N > 1: Ray Train (DDP) with N workers per trial."),
    cpus_per_worker: Optional[float] = typer.Option(None, min=0.0, help="CPUs (and torch threads) per trial worker "
                                                    "(default 1)."),
    gpus_per_worker: Optional[float] = typer.Option(None, min=0.0, help="GPUs per trial worker (default 0)."),
    seed: Optional[int] = typer.Option(None, help="Sampler and training seed (default 42)."),
    ticker: str = typer.Option("", help="Comma-separated target tickers (default: every ticker of the universe / "
                               "every file of --data)."),
    universe: Optional[str] = typer.Option(None, help="Embedded universe: msft (default), tech, sp20, us29, "
                                           "sp500_2010 (stocktrend data universes)."),
    data: Optional[str] = typer.Option(None, help="Directory of CSV/Parquet files (default: the embedded universe)."),
    label: Optional[str] = typer.Option(None, callback=_one_of("auto", "binary", "ternary", "excess"),
                                        help="auto (default: excess on a panel of 3+ tickers, binary otherwise), "
                                        "binary (Bajista/Alcista), ternary (with Neutral) or excess (the direction "
                                        "against the day's universe mean; panels)."),
    ticker_id: bool = typer.Option(False, "--ticker-id", help="The ticker's identity as a one-hot model input."),
    features: Optional[str] = typer.Option(None, callback=_one_of("standard", "short"),
                                           help="Feature set (default: the universe's own; short = look-backs up to "
                                           "60 days)."),
    storage: Optional[str] = typer.Option(None, help="Tune/Train storage: a local dir or a URI shared by all nodes "
                                          "(default $STOCKTREND_HOME/tune)."),
    optuna_storage: Optional[str] = typer.Option(None, help="Optuna RDB URL (default sqlite in $STOCKTREND_HOME)."),
    model_name: Optional[str] = typer.Option(None, help="Registered model name (default stocktrend)."),
    promote: bool = typer.Option(False, "--promote", help="Offer the best trial's version to production through the "
                                 "gate (judged against production on days neither saw)."),
    kept_exit_code: int = typer.Option(3, help="Exit code of --promote when production is kept (0 for a Ray Job or "
                                       "scheduler that treats any other code as a failure)."),
    no_register: bool = typer.Option(False, "--no-register", help="Do not register the best trial in MLflow."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join (host:port, ray://host:port, or auto = the "
                                          "running local cluster); default $RAY_ADDRESS, else a private local "
                                          "instance."),
    searcher: Optional[str] = typer.Option(None, callback=_one_of("optuna", "random"),
                                           help="optuna (default: TPE) | random."),
    scheduler: Optional[str] = typer.Option(None, callback=_one_of("asha", "fifo"),
                                            help="asha (default) | fifo (every trial runs --max-epochs)."),
    nested_train: bool = typer.Option(False, "--nested-train", help="Run Ray Train inside 1-worker trials too (the "
                                      "slower pre-0.2 path, for comparisons)."),
    start_timeout: Optional[float] = typer.Option(None, min=1.0, help="Seconds a trial's Ray Train workers may take "
                                                  "to start before the trial fails (default 30)."),
    max_failures: Optional[int] = typer.Option(None, min=0, help="Restarts of a failed trial from its last checkpoint "
                                               "(a lost node, a killed worker); default 0: a failed trial stays "
                                               "failed."),
    data_transport: Optional[str] = typer.Option(None, callback=_one_of("auto", "object-store", "stream"),
                                                 help="How trials get the features: auto (default: in memory while "
                                                 "the panel fits half the available memory, else streamed), "
                                                 "object-store (the panel in memory, shipped once) or stream (a "
                                                 "partitioned dataset each trial reads a ticker at a time)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's trial table and logs on the console."),
    smoke_test: bool = typer.Option(False, "--smoke-test", help="Tiny preset, 2 trials x 2 epochs (ASHA grace 1), "
                                    "registered as <model-name>-smoke-test: the whole search path in about a "
                                    "minute."),
) -> None:
    """Ray Tune + Optuna (TPE) + ASHA search: trial table, best trial registered in MLflow; --promote offers it to
    production through the gate."""
    from stocktrend.tune.options import SearchOptions
    given = dict(name=name, preset=preset, model=model, num_samples=num_samples, max_epochs=max_epochs,
                 grace_period=grace_period, epoch_windows=None if epoch_windows is None else max(0, epoch_windows),
                 reduction_factor=reduction_factor, metric=metric, max_concurrent=max_concurrent,
                 workers_per_trial=workers_per_trial, cpus_per_worker=cpus_per_worker,
                 gpus_per_worker=gpus_per_worker, seed=seed, data_dir=data, universe=universe, label_kind=label,
                 features=features, storage=storage, optuna_storage=optuna_storage, model_name=model_name,
                 address=address, searcher=searcher, scheduler=scheduler, start_timeout_s=start_timeout,
                 max_failures=max_failures, data_transport=data_transport)
    opts = SearchOptions(**{k: v for k, v in given.items() if v is not None},
                         tickers=tuple(t for t in ticker.split(",") if t), ticker_id=ticker_id, promote=promote,
                         kept_exit_code=kept_exit_code, register=not no_register, nested_train=nested_train,
                         verbose=verbose or STATE["verbose"])
    if smoke_test:
        from dataclasses import replace
        opts = replace(opts, preset="tiny", num_samples=2, max_epochs=2, grace_period=1,
                       name=name or f"smoke-test-{time.strftime('%Y%m%d-%H%M%S')}",
                       model_name=f"{opts.model_name}-smoke-test")
    raise typer.Exit(run(opts))


def _gated_promote(name: str, version: int) -> int:
    """--promote: the one door into production, gated."""
    from stocktrend.loop.door import promote_version
    from stocktrend.loop.gate import GateOptions
    res = promote_version(name, version, GateOptions(), by="stocktrend tune --promote", say=typer.echo)
    typer.echo(f"decision     : {res.decision}" + (f" ({res.reason})" if res.reason else "") +
               (f"; report {res.report_path}" if res.report_path else ""))
    return res.exit_code


def run(opts) -> int:
    """Run a search as the command does: its console, one line per outcome, exit 0 / 2 (error) / 130 (interrupted,
    resumable) / the gate's code with --promote."""
    from stocktrend.platform import console
    from stocktrend.platform.training.distributed import shutdown_ray
    from stocktrend.tune.results import print_summary
    from stocktrend.tune.search import SearchInterrupted, run_search
    console.setup("tune", opts.verbose)
    try:
        res = run_search(opts)
    except SearchInterrupted as exc:
        print(f"\ninterrupted: {exc.summary}", file=sys.stderr, flush=True)
        shutdown_ray()
        return 130
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command (--name {opts.name}) to resume", file=sys.stderr, flush=True)
        shutdown_ray()
        return 130
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}{console.where()}", file=sys.stderr)
        shutdown_ray()
        return 2
    print_summary(res, opts)
    shutdown_ray()
    if opts.promote and res.get("version"):
        code = _gated_promote(opts.model_name, int(res["version"]))
        return opts.kept_exit_code if code == 3 else code
    return 0
