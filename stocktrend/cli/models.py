"""``stocktrend predict``, ``evaluate`` and ``models ...``: what a registered model says and how good it is."""

from __future__ import annotations

import json
from typing import Optional

import typer

from stocktrend.cli.common import app, models_app

@app.command("predict")
def predict_cmd(
    model: str = typer.Argument(..., help="Checkpoint file or NAME[@ALIAS|@VERSION] from the registry."),
    csv: Optional[str] = typer.Option(None, "--csv", help="Price file (.csv or .parquet) of the ticker: close, and "
                                      "open/high/low/volume if the model uses them."),
    ticker: Optional[str] = typer.Option(None, "--ticker", "-t", help="A ticker of the model's universe: its own bars "
                                         "are used (with --csv: names the file's ticker)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="With --ticker alone: last day of history to use "
                                        "(YYYY-MM-DD; default its last day)."),
    market_dir: Optional[str] = typer.Option(None, "--market-dir", help="Directory of market series files named as "
                                             "at training (default: those of the model's universe)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict the trend from the last window of a price file or of a ticker of the model's universe: probabilities,
    label and BUY/SELL signal."""
    from pathlib import Path

    from stocktrend.platform.data.sources import load_price_file
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.jobs import resolve_model
    if not csv and not ticker:
        raise typer.BadParameter("give --csv FILE or --ticker NAME")
    if csv and as_of:
        raise typer.BadParameter("--as-of goes with --ticker alone; cut the file at the day you want")
    path, _ = resolve_model(model)
    pred = Predictor.load(path)
    if csv:
        prices = load_price_file(csv, required=("close",))
        universe = pred.source_universe()
        market, indicators = universe.market, universe.indicators
    else:
        prices, market, indicators = pred.bars_for(ticker, as_of)
    if market_dir:
        market = {p.stem: load_price_file(p, required=("close",)) for p in sorted(Path(market_dir).iterdir())
                  if p.suffix.lower() in (".csv", ".parquet", ".pq")}
    out = pred.predict_prices(prices, market, indicators, ticker=ticker)
    last_day = str(prices.index[-1].date())
    if as_json:
        typer.echo(json.dumps({"ticker": ticker, "date": last_day,
                               "probabilities": dict(zip(pred.class_names, out.probabilities[0])),
                               "label": out.labels[0], "signal": out.signals[0],
                               "confidence": out.confidence[0]}, indent=2))
        return
    probs = ", ".join(f"{n} {p:.3f}" for n, p in zip(pred.class_names, out.probabilities[0]))
    typer.echo(f"{ticker + ' ' if ticker else ''}{last_day}: {out.labels[0]} -> {out.signals[0]} (confidence "
               f"{out.confidence[0]:.3f}; {probs}; horizon {pred.data_config.horizon} days). Not financial advice.")


@models_app.command("list")
def models_list(name: str = typer.Argument("stocktrend")) -> None:
    """Versions of a registered model: kind, label, aliases and key metrics."""
    from stocktrend.platform.registry import mlflow_registry as registry
    keys = ("test_acc", "test_auc", "test_mae", "test_dir_acc", "test_rank_ic", "best_val_loss", "best_val_rank_ic")
    for v in registry.list_versions(name):
        metrics = ", ".join(f"{k} {float(v['metrics'][k]):.3f}" for k in keys if k in v["metrics"])
        aliases = f" [{', '.join(v['aliases'])}]" if v["aliases"] else ""
        typer.echo(f"{name} v{v['version']}{aliases}  {v['model_kind']}  label {v['label_kind'] or '?'}  "
                   f"{metrics or 'no test metrics'}  ({v['description']}; run {v['run_id']})")


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
                   force: bool = typer.Option(False, "--force", help="Skip the gate (recorded on the version: tags "
                                              "stocktrend.forced, forced_at, forced_by)."),
                   gate: str = typer.Option("enabled", help="enabled | dry-run (report, move nothing)."),
                   gate_days: int = typer.Option(63, help="The window: the last N labelled days of the data."),
                   auc_margin: float = typer.Option(0.02, help="Classifiers: AUC floor 0.5 + this (>= 0)."),
                   min_change: float = typer.Option(0.0, help="Change against production (absolute, >= 0)."),
                   change_metric: Optional[str] = typer.Option(None, help="As for stocktrend retrain."),
                   beat: Optional[str] = typer.Option(None, "--beat", help="Baselines to beat, e.g. momentum."),
                   as_of: Optional[str] = typer.Option(None, "--as-of", help="The data as of this day (default: "
                                                       "all of it)."),
                   universe: Optional[str] = typer.Option(None, "--universe", "-u", help="Default: the version's."),
                   data: Optional[str] = typer.Option(None, "--data", help="A directory of CSV/Parquet files "
                                                      "instead (new bars)."),
                   kept_exit_code: int = typer.Option(3, "--kept-exit-code", help="Exit code when production is "
                                                      "kept.")) -> None:
    """Move production to a version through the gate: the version is judged against the current production on the
    last --gate-days labelled days of its data (days neither saw), then production moves as a compare-and-set
    (exit 0) or stays (exit 3). --force skips the gate and is recorded on the version. The previous holder is kept
    for rollback."""
    from stocktrend.loop.door import promote_version
    from stocktrend.loop.gate import GateOptions, parse_beat
    if gate not in ("enabled", "dry-run"):
        raise typer.BadParameter("--gate enabled | dry-run (use --force to skip the gate)")
    gopts = GateOptions(mode=gate, gate_days=gate_days, auc_margin=auc_margin, min_change=min_change,
                        change_metric=change_metric, beat=parse_beat(beat))
    gopts.check()
    res = promote_version(name, version, gopts, force=force, by="stocktrend models promote --force",
                          data_dir=data, universe=universe, as_of=as_of, say=typer.echo)
    from stocktrend.platform.registry import mlflow_registry as registry
    now = registry.aliases(name).get(registry.ALIAS)
    typer.echo(f"decision     : {res.decision}" + (f" ({res.reason})" if res.reason else ""))
    typer.echo(f"production   : {name}@production = version {now}" +
               (f" (was {res.champion})" if res.champion is not None and res.champion != now else ""))
    if res.report_path:
        typer.echo(f"report       : {res.report_path}")
    raise typer.Exit(kept_exit_code if res.exit_code == 3 else res.exit_code)


@models_app.command("rollback")
def models_rollback(name: str = typer.Argument("stocktrend")) -> None:
    """Give the production alias back to the version that held it before the last promote."""
    from stocktrend.platform.registry import mlflow_registry as registry
    r = registry.rollback(name)
    typer.echo(f"{name}@production -> version {r['version']} (was {r['previous']})")


def summary_lines(res: dict) -> list[str]:
    """The console summary of ``evaluate``: the model and every baseline (classification, regression, panel rank IC
    and long-short), the backtest, the verdict."""
    lines: list[str] = []
    if "scores" in res:
        m = res["scores"]["model"]
        lines.append(f"model        : acc {m['accuracy']:.3f}, balanced acc {m['balanced_accuracy']:.3f}, AUC "
                    f"{m['auc']:.3f} (95% CI {m['auc_ci'][0]:.3f}-{m['auc_ci'][1]:.3f}), MCC {m['mcc']:.3f}")
        for name, s in res["scores"].items():
            if name != "model":
                lines.append(f"{name:<13}: acc {s['accuracy']:.3f}, balanced acc {s['balanced_accuracy']:.3f}, "
                            f"AUC {s['auc']:.3f}")
    for name, s in res.get("regression", {}).items():
        lines.append(f"{('return ' + name)[:20]:<20}: MAE {s['mae']:.4f}, corr {s['corr']:.3f}, hit rate "
                    f"{s['hit_rate']:.3f}")
    bt = res["backtest"]
    lines.append(f"backtest     : Sharpe {bt['model']['sharpe']:.2f} vs buy-and-hold {bt['buy_and_hold']['sharpe']:.2f}"
                f" (annual {bt['model']['annual_return']:+.1%} vs {bt['buy_and_hold']['annual_return']:+.1%})")
    cs = res.get("cross_section")
    if cs:
        ic, ls = cs["ic"]["model"], cs["long_short"]
        lines.append(f"cross-section: rank IC {ic['rank_ic_mean']:.3f} (t {ic['rank_ic_t']:.2f}), long-short Sharpe "
                    f"{ls['model']['sharpe']:.2f} vs equal-weight hold {ls['equal_weight_hold']['sharpe']:.2f}")
        for name, b in cs["ic"].items():  # every baseline beside the model, on the same days
            if name != "model":
                bls = ls.get(name, {}).get("sharpe", float("nan"))
                lines.append(f"{name[:13]:<13}: rank IC {b['rank_ic_mean']:.3f} (t {b['rank_ic_t']:.2f}), long-short "
                            f"Sharpe {bls:.2f}")
    for line in res["verdict"]:
        lines.append(f"verdict      : {line}")
    return lines


@app.command("evaluate")
def evaluate_cmd(
    model: Optional[str] = typer.Argument(None, help="Checkpoint file or NAME[@ALIAS|@VERSION] from the registry "
                                          "(default: the latest version of 'stocktrend')."),
    out: Optional[str] = typer.Option(None, help="Report directory (default $STOCKTREND_HOME/reports/<model>)."),
    threshold: float = typer.Option(0.5, help="Backtest: long when P(Alcista) > threshold."),
    cost_bps: float = typer.Option(5.0, help="Backtest: cost per side in basis points."),
    short: bool = typer.Option(False, "--short", help="Backtest: short instead of flat below the threshold."),
    walk_forward: int = typer.Option(0, min=0, help="Also run K walk-forward folds (retrains per fold)."),
    leakage_audit: bool = typer.Option(False, "--leakage-audit", help="Also run the seeds' protocol next to the "
                                       "honest one (retrains twice)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epoch cap when retraining (walk-forward, audit)."),
    universe: Optional[str] = typer.Option(None, "--universe", "-u", help="Score on another embedded universe "
                                           "(default: the one the model was trained on)."),
) -> None:
    """Score a model next to baselines on the untouched test segment; backtest; cross-section (IC, long-short) for
    panels; Markdown + PNG report."""
    from stocktrend.platform.evaluation.report import EvalOptions, evaluate
    if model is None:
        from stocktrend.platform.registry import mlflow_registry as registry
        latest = max(v["version"] for v in registry.list_versions(registry.DEFAULT_MODEL)) \
            if registry.list_versions(registry.DEFAULT_MODEL) else None
        if latest is None:
            raise ValueError(f"model {registry.DEFAULT_MODEL!r} has no versions: train one (stocktrend train)")
        model = f"{registry.DEFAULT_MODEL}@{latest}"
        typer.echo(f"evaluating {model} (the latest version)")
    res = evaluate(model, out, EvalOptions(threshold=threshold, cost_bps=cost_bps, allow_short=short,
                                           walk_forward=walk_forward, leakage_audit=leakage_audit, epochs=epochs,
                                           universe=universe))
    for line in summary_lines(res):
        typer.echo(line)
    typer.echo(f"report       : {res['report']}")

