"""``stocktrend score`` and ``stocktrend retrain``: the daily loop's commands (also ``python -m stocktrend.loop``)."""

from __future__ import annotations

from typing import Optional

import typer

from stocktrend.cli.common import _finish, _interruptible, app
from stocktrend.models import DEFAULT_KIND


@app.command("score")
def score_cmd(
    model: str = typer.Option("stocktrend@production", "--model", help="NAME[@ALIAS|@VERSION] or a checkpoint file."),
    challenger: Optional[str] = typer.Option(None, "--challenger", help="A second model scored in the same pass "
                                             "(same label, horizon and tickers), e.g. stocktrend@challenger."),
    universe: Optional[str] = typer.Option(None, "--universe", "-u", help="Default: the model's own universe."),
    data: Optional[str] = typer.Option(None, "--data", envvar="STOCKTREND_DATA", help="A directory of CSV/Parquet "
                                       "files with the model's tickers (new bars; default $STOCKTREND_DATA)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Score this day (YYYY-MM-DD), or 'latest': the last "
                                        "trading day in the data (the evening job; weekends and holidays are no "
                                        "error)."),
    start: Optional[str] = typer.Option(None, "--start", help="First day of a range (with --end)."),
    end: Optional[str] = typer.Option(None, "--end", help="Last day of a range (with --start)."),
    engine: str = typer.Option("auto", help="ray (Ray Data) | local (this process) | auto (local below "
                               "100,000 ticker-days)."),
    actors: int = typer.Option(0, min=0, help="Ray Data inference actors (0 = one per CPU)."),
    backend: str = typer.Option("onnx", help="Inference backend: onnx | torch | torch-bf16 | onnx-int8."),
    out: Optional[str] = typer.Option(None, "--out", help="Scores root (default $STOCKTREND_HOME/scores)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join (default: $RAY_ADDRESS, else a private "
                                          "local instance)."),
) -> None:
    """Score every ticker of the universe on every trading day of the range; one Parquet partition per model and day
    under $STOCKTREND_HOME/scores/<name>/v<version>/as_of=<day>/ (a rerun replaces a day's partition atomically)."""
    from stocktrend.loop.score import ScoreOptions, score
    from stocktrend.serve.config import BACKENDS
    if backend not in BACKENDS:
        raise typer.BadParameter(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    opts = ScoreOptions(model=model, challenger=challenger, universe=universe, data_dir=data, as_of=as_of,
                        start=start, end=end, engine=engine, actors=actors, backend=backend, out_dir=out,
                        address=address)
    if opts.address or engine == "ray":
        from stocktrend.platform.training.ray_address import check_address
        check_address(address)
    with _interruptible("score"):
        res = score(opts, typer.echo)
    _finish()
    for m in res["models"]:
        f = m["frame"]
        counts = f["label"].value_counts().to_dict()
        typer.echo(f"scored       : {m['name']} v{m['version']}: {f['ticker'].nunique()} ticker(s) x {m['days']} "
                   f"day(s) = {m['rows']:,} rows ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
        typer.echo(f"written      : {m['folder']}/as_of=<day>/scores.parquet")
    typer.echo(f"took         : {res['seconds']:.1f} s on the {res['engine']} engine "
               f"({res['rows'] / max(res['seconds'], 1e-9):,.0f} rows/s)")


@app.command("retrain")
def retrain_cmd(
    model: str = typer.Option("stocktrend", "--model", help="Registered model name; its production version is the "
                              "champion."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Retrain on the data as of this day (default: the "
                                        "last day of the data; nothing later is read)."),
    universe: Optional[str] = typer.Option(None, "--universe", "-u", help="Default: the champion's universe."),
    data: Optional[str] = typer.Option(None, "--data", envvar="STOCKTREND_DATA", help="A directory of CSV/Parquet "
                                       "files with the champion's tickers (new bars; default $STOCKTREND_DATA)."),
    search: bool = typer.Option(False, "--search", help="A small Tune search over the champion's kind instead of a "
                                "plain retrain (its trials hold the gate window out too)."),
    search_trials: int = typer.Option(6, min=2, help="Trials of --search."),
    search_epochs: int = typer.Option(6, min=1, help="Epochs per trial of --search."),
    gate: str = typer.Option("enabled", help="enabled (promote on pass) | dry-run (report, move nothing) | off "
                             "(promote without the gate's verdict)."),
    gate_days: int = typer.Option(63, help="The gate window: the last N labelled days (neither model trained "
                                  "or early-stopped on them; at least 5)."),
    val_days: int = typer.Option(126, help="The early-stopping block right before the window, in trading days (the "
                                 "challenger trains on everything before it; at least 5)."),
    train_days: int = typer.Option(0, help="Train on a rolling window of this many trading days before the "
                                   "validation block (0 = all history)."),
    auc_margin: float = typer.Option(0.02, help="Classifiers: the challenger's AUC on the window must reach 0.5 + "
                                     "this (>= 0)."),
    min_change: float = typer.Option(0.0, help="The challenger must beat the champion on --change-metric by "
                                     "at least this (absolute, >= 0; 0 = at least as good)."),
    change_metric: Optional[str] = typer.Option(None, help="auc | accuracy (classifiers), corr | hit_rate | mae "
                                                "(regressors), rank_ic | long_short_sharpe (panels). Default auc / "
                                                "corr."),
    beat: Optional[str] = typer.Option(None, "--beat", help="Baselines the challenger must also beat on the change "
                                       "metric, e.g. momentum,majority (classifiers: majority, momentum, "
                                       "logistic_regression; regressors: zero, train_mean, momentum, ridge)."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="After a pass, train the same configuration for the "
                               "gated version's epoch count on every labelled day through the as-of day and promote "
                               "that version (lineage to the gated one); --no-refit promotes the gated version."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epoch cap (default: the champion's recipe)."),
    workers: int = typer.Option(0, min=0, help="Ray Train workers (0 = train in this process)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join (default: $RAY_ADDRESS, else a private "
                                          "local instance)."),
    kept_exit_code: int = typer.Option(3, "--kept-exit-code", help="Exit code when the champion is kept (0 for a Ray "
                                       "Job or scheduler that treats any other code as a failure)."),
) -> None:
    """Retrain the production model on the newest data, gate the challenger against the champion on days neither
    saw, promote or keep. Exit codes: 0 promoted, 3 champion kept, 2 user error, 1 failure."""
    from stocktrend.loop.gate import GateOptions, parse_beat
    from stocktrend.loop.retrain import RetrainOptions, retrain
    gopts = GateOptions(mode=gate, gate_days=gate_days, val_days=val_days, train_days=train_days,
                        auc_margin=auc_margin, min_change=min_change, change_metric=change_metric,
                        beat=parse_beat(beat))
    gopts.check()
    if workers or search or address:
        from stocktrend.platform.training.ray_address import check_address
        check_address(address)
    opts = RetrainOptions(model=model, as_of=as_of, universe=universe, data_dir=data, gate=gopts, search=search,
                          search_trials=search_trials, search_epochs=search_epochs, epochs=epochs, workers=workers,
                          address=address, refit=refit)
    with _interruptible("retrain"):
        try:
            res = retrain(opts, typer.echo)
        except (ValueError, FileNotFoundError, KeyboardInterrupt):
            raise  # user errors: one line, exit 2 (stocktrend.cli.main); Ctrl-C: 130
        except Exception as exc:  # anything else is a failure of the run: exit 1, aliases untouched
            from stocktrend.platform import console
            typer.echo(f"error: retrain failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                       f"{console.where()}", err=True)
            _finish()
            raise typer.Exit(1)
    _finish()
    from stocktrend.platform.registry import mlflow_registry as registry
    now = registry.aliases(model).get(registry.ALIAS)
    typer.echo(f"decision     : {res.decision}" + (f" ({res.reason})" if res.reason else ""))
    typer.echo(f"production   : {model}@production = version {now} (champion was {res.champion}, challenger "
               f"{res.challenger}; rollback: stocktrend models rollback {model})")
    if res.staleness:
        st = res.staleness
        typer.echo(f"staleness    : {st['days']} trading days (last training label {st['last_label']}, bound "
                   f"{st['bound']})" + (f"; refit v{res.refit}: {st['refit']['days']}" if "refit" in st else ""))
    typer.echo(f"report       : {res.report_path}")
    typer.echo(f"took         : {res.seconds:.0f} s (data as of {res.as_of})")
    raise typer.Exit(kept_exit_code if res.exit_code == 3 else res.exit_code)


@app.command("replay")
def replay_cmd(
    start: str = typer.Option(..., "--start", help="First step day (YYYY-MM-DD): enough history must precede it."),
    end: str = typer.Option(..., "--end", help="Last day served."),
    every: int = typer.Option(21, min=1, help="Trading days between steps (retrains); at least the label horizon."),
    universe: Optional[str] = typer.Option(None, "--universe", "-u", help="Embedded universe (default msft)."),
    data: Optional[str] = typer.Option(None, "--data", help="Directory of CSV/Parquet files instead."),
    model: str = typer.Option(DEFAULT_KIND, "--model", "-m", help="Model kind retrained at every step."),
    preset: str = typer.Option("small", help="Model preset."),
    label: str = typer.Option("auto", help="Label kind: auto (excess on a panel of 3+ tickers, binary otherwise) | "
                              "binary | ternary | excess | rank | ..."),
    sequence_length: Optional[int] = typer.Option(None, min=1, help="Days per window (default: the universe's)."),
    top_k: Optional[int] = typer.Option(None, min=0, help="Features kept; default: the universe's."),
    search: bool = typer.Option(False, "--search", help="Each step runs a small Tune search instead of a plain "
                                "retrain (one step at a time)."),
    policy: str = typer.Option("gated-refit", help="Which policy moves the replay registry's aliases: gated | "
                               "gated-refit | always | never (the report covers each one trained)."),
    refit: bool = typer.Option(False, "--refit", help="Also train each step's refit on every labelled day, for the "
                               "gated-refit policy (implied by --policy gated-refit)."),
    gate_days: int = typer.Option(63, help="Gate window: the last N labelled days before each step (>= 5)."),
    val_days: int = typer.Option(126, help="Early-stopping block before the window, in trading days (>= 5)."),
    train_days: int = typer.Option(0, help="Rolling training window before the validation block (0 = all history)."),
    auc_margin: float = typer.Option(0.02, help="Gate floor: challenger AUC >= 0.5 + margin (classifiers; >= 0)."),
    min_change: float = typer.Option(0.0, help="Gate change threshold against the champion (>= 0)."),
    change_metric: Optional[str] = typer.Option(None, help="Gate change metric (default auc / corr)."),
    beat: Optional[str] = typer.Option(None, "--beat", help="Baselines the challenger must also beat (see retrain)."),
    epochs: int = typer.Option(5, min=1, help="Epochs per step's training."),
    epoch_windows: int = typer.Option(8192, min=0, help="Training windows per epoch (a fresh draw each epoch; 0 = "
                                      "all)."),
    parallel: int = typer.Option(0, min=0, help="Step trainings at once on Ray (0 = one per CPU)."),
    name: str = typer.Option("replay", help="Replay name: its registry is replay-<name>, its state and report are "
                             "kept under it; rerun the same command to resume."),
    cost_bps: float = typer.Option(5.0, help="Costs per unit traded, in basis points."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join (default: $RAY_ADDRESS, else a private "
                                          "local instance)."),
) -> None:
    """Replay the daily loop over history: every N trading days retrain on the data as of that day, gate, promote or
    keep; the production version answers the days until the next step. Reports realised IC, hit rate and portfolios
    for the gated, always and never policies (Ctrl-C stops; the same command resumes)."""
    from stocktrend.loop.gate import GateOptions, parse_beat
    from stocktrend.loop.replay import ReplayOptions, replay
    from stocktrend.models import zoo
    from stocktrend.platform.data.universes import AUTO_LABEL, default_label
    spec = zoo.get(model)
    if label == AUTO_LABEL:
        label = default_label(None if data else (universe or "msft"), data)
    if preset not in spec.presets:
        raise typer.BadParameter(f"unknown preset {preset!r} for {model}; available: {', '.join(spec.presets)}")
    if address:
        from stocktrend.platform.training.ray_address import check_address
        check_address(address)
    gopts = GateOptions(gate_days=gate_days, val_days=val_days, train_days=train_days, auc_margin=auc_margin,
                        min_change=min_change, change_metric=change_metric, beat=parse_beat(beat))
    gopts.check()
    opts = ReplayOptions(start=start, end=end, every=every, name=name, universe=None if data else (universe or "msft"),
                         data_dir=data, model=spec.kind, preset=preset, label=spec.label_for(label),
                         sequence_length=sequence_length, top_k=top_k, search=search,
                         policy=policy, refit=refit or policy == "gated-refit", gate=gopts, epochs=epochs,
                         epoch_windows=epoch_windows, parallel=parallel,
                         cost_bps=cost_bps, address=address)
    with _interruptible("replay"):
        res = replay(opts, typer.echo)
    _finish()
    typer.echo(f"took         : {res['seconds']:.0f} s for {res['steps']} steps")


@app.command("monitor")
def monitor_cmd(
    model: str = typer.Option("stocktrend@production", "--model", help="NAME[@ALIAS|@VERSION] whose scores to read."),
    start: Optional[str] = typer.Option(None, "--start", help="First scored day (default: the first stored)."),
    end: Optional[str] = typer.Option(None, "--end", help="Last scored day (default: the last stored)."),
    universe: Optional[str] = typer.Option(None, "--universe", "-u", help="Default: the model's own universe."),
    data: Optional[str] = typer.Option(None, "--data", help="The directory the scores were made from, if not the "
                                       "model's own data."),
    scores: Optional[str] = typer.Option(None, "--scores", help="Scores root (default $STOCKTREND_HOME/scores)."),
) -> None:
    """Drift (input PSI, class-mix shift, confidence) and realised performance (hit rate, rank IC, against the
    baselines) of a model's batch scores over a range of days; Markdown + JSON report."""
    from stocktrend.loop.monitor import MonitorOptions, monitor
    monitor(MonitorOptions(model=model, start=start, end=end, universe=universe, data_dir=data, scores_dir=scores),
            typer.echo)
