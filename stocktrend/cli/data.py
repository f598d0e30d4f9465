"""``stocktrend data ...``: build and inspect data sets, list the embedded universes."""

from __future__ import annotations

import json
from typing import Optional

import typer

from stocktrend.cli.common import _fractions, _split_list, data_app

LABELS = ("binary", "ternary", "regression", "excess", "excess_regression", "rank")


def universe_option(default: str = "msft"):
    return typer.Option(default, "--universe", "-u", help="Embedded universe (stocktrend data universes lists them); "
                        "ignored with --data.")


def ticker_id_option():
    return typer.Option(False, "--ticker-id", help="Give the model the ticker's identity (one-hot input per ticker).")


def features_option():
    return typer.Option(None, "--features", help="Feature set: standard (look-backs up to 250 days) or short (up to 60 "
                        "days, for short histories); default: the universe's own (stocktrend data universes).")


def format_summary(s: dict) -> str:
    many = len(s["tickers"]) > 12
    shown = ", ".join(s["tickers"][:10]) + (f", ... ({len(s['tickers'])} tickers; --json lists each)" if many else "")
    lines = [f"tickers      : {shown}  ({s['rows']} rows after warm-up)"]
    for t, info in ({} if many else s.get("per_ticker", {})).items():
        samples = ", ".join(f"{k} {v}" for k, v in info["samples"].items())
        lines.append(f"  {t:<11}: {info['dates'][0]} .. {info['dates'][1]}  {info['rows']} rows; samples {samples}; "
                     f"purged {info['purged']}, embargoed {info['embargoed']}")
    lines += [f"label        : {s['label_kind']}, horizon {s['horizon']} days; windows of {s['sequence_length']} days",
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
                                         help="Target ticker(s), comma-separated (default: every ticker of the "
                                              "universe, or every file of --data)."),
    universe: str = universe_option(),
    data: Optional[str] = typer.Option(None, "--data", help="Directory of CSV/Parquet files (default: embedded)."),
    market: Optional[str] = typer.Option(None, help="Embedded market series, comma-separated (default SP500,NASDAQ)."),
    indicators: Optional[str] = typer.Option(None, help="Embedded indicators, comma-separated (e.g. VIX)."),
    sequence_length: Optional[int] = typer.Option(None, min=1, help="Days per input window (default 30, or the "
                                                  "universe's own: stocktrend data universes)."),
    horizon: int = typer.Option(5, min=1, help="Forward-return horizon of the label (days)."),
    label: str = typer.Option("auto", help="auto (excess on a panel of 3+ tickers, binary otherwise) | binary | "
                              "ternary | regression; market-neutral (panels): excess | excess_regression | rank."),
    top_k: Optional[int] = typer.Option(None, min=0, help="Features kept (0 = all; default 50, or the universe's "
                                        "own: stocktrend data universes)."),
    split: Optional[str] = typer.Option(None, help="Train,val,test fractions of the timeline (default 0.8,0.1,0.1, or "
                                        "the universe's own)."),
    features: Optional[str] = features_option(),
    embargo: int = typer.Option(5, min=0, help="Days of embargo after each purged boundary."),
    ticker_id: bool = ticker_id_option(),
    cache_dir: Optional[str] = typer.Option(None, help="Feature cache directory (default $STOCKTREND_HOME/cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features and do not write the cache."),
    jobs: int = typer.Option(0, min=0, help="Processes computing features (0 = one per CPU). A killed build keeps the "
                             "tickers it finished; the same command resumes it."),
    partitioned: bool = typer.Option(False, "--partitioned", help="Write the features as one Parquet file per ticker "
                                     "and fit the split, scaler and selection by streaming passes (nothing holds the "
                                     "whole panel): the data set `train --workers N --data-transport stream` reads."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Build the data set and print a summary (tickers and their dates, splits, class balance, features, purge and
    embargo counts, cache)."""
    import os

    from stocktrend.platform.data.dataset import build_dataset
    cfg = data_config(ticker, data, market, indicators, sequence_length, horizon, label, top_k, split, embargo,
                      universe, ticker_id, features)
    if partitioned:
        if no_cache:
            raise typer.BadParameter("--partitioned writes the partitioned feature dataset: drop --no-cache")
        from stocktrend.platform.data.stream import build_streamed
        streamed = build_streamed(cfg, cache_dir=cache_dir, n_jobs=jobs or os.cpu_count() or 1)
        summary = streamed_summary(streamed)
        typer.echo(json.dumps(summary, indent=2) if as_json else format_streamed(summary))
        return
    prepared = build_dataset(cfg, cache_dir=cache_dir, use_cache=not no_cache, n_jobs=jobs or os.cpu_count() or 1)
    summary = prepared.summary()
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


def streamed_summary(data) -> dict:
    """The partitioned data set in numbers (no rows are read)."""
    plan, panel = data.plan, data.panel
    segs = {seg: {"samples": plan.samples(seg), "dates": list(plan.segment_dates[seg]),
                  "class_counts": plan.class_counts_by_segment[seg]} for seg in ("train", "val", "test")}
    segs["train"]["after_oversampling"] = plan.samples("train", balanced=True)
    return {"dataset": str(panel.root), "reused": panel.cache_hit, "tickers": len(plan.tickers),
            "tickers_left_out": len(panel.tickers) - len(plan.tickers), "rows": panel.rows,
            "features_total": len(panel.feature_names), "features_kept": len(plan.transforms.selected),
            "selected": plan.transforms.selected, "sequence_length": plan.seq_len, "label_kind": plan.kind.value,
            "segments": segs, "purged": sum(t.purged for t in plan.per_ticker.values()),
            "embargoed": sum(t.embargoed for t in plan.per_ticker.values()), "data_hash": panel.data_hash,
            "seconds": {"features": round(panel.seconds, 1), "plan": round(plan.seconds, 1)}}


def format_streamed(s: dict) -> str:
    lines = [f"dataset   : {s['dataset']} ({'reused' if s['reused'] else 'built'}; one Parquet file per ticker)",
             f"tickers   : {s['tickers']}" + (f" ({s['tickers_left_out']} left out: too little history)"
                                              if s["tickers_left_out"] else "") + f", {s['rows']:,} rows",
             f"features  : {s['features_kept']} of {s['features_total']} kept (fitted on the training segment by "
             f"streaming passes)", f"window    : {s['sequence_length']} days, label {s['label_kind']}"]
    for seg, v in s["segments"].items():
        extra = f", {v['after_oversampling']:,} after oversampling" if "after_oversampling" in v else ""
        counts = ", ".join(f"{k} {n:,}" for k, n in v["class_counts"].items())
        lines.append(f"{seg:<10}: {v['samples']:,} samples{extra}, {v['dates'][0]} .. {v['dates'][1]}"
                     + (f" ({counts})" if counts else ""))
    lines.append(f"purged    : {s['purged']:,} samples, embargoed {s['embargoed']:,}")
    lines.append(f"time      : features {s['seconds']['features']} s, plan {s['seconds']['plan']} s")
    lines.append("next      : stocktrend train --workers 2 --data-transport stream (same data flags)")
    return "\n".join(lines)


@data_app.command("universes")
def data_universes(as_json: bool = typer.Option(False, "--json")) -> None:
    """The embedded universes: tickers, dates, columns, source and licence (no data is loaded)."""
    from stocktrend.platform.data.universes import describe
    rows = describe()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['name']}\n  tickers : {r['tickers']}\n  columns : {r['columns']}\n  dates   : {r['dates']}\n"
                   f"  market  : {r['market']}\n  source  : {r['source']}\n  licence : {r['licence']}\n"
                   f"  install : {r['install']}\n  features: {r['features']}\n  defaults: {r['defaults']}"
                   + (f"\n  caveats : {r['caveats']}" if r.get("caveats") else "")
                   + (f"\n  sectors : {r['sectors']}" if r.get("sectors") else ""))


def data_config(ticker, data, market, indicators, sequence_length, horizon, label, top_k, split, embargo,
                universe="msft", ticker_id=False, features=None):
    """Flags -> DataConfig; settings left unset take the universe's own defaults (``data_defaults``)."""
    from stocktrend.platform.data.dataset import DataConfig
    from stocktrend.platform.data.features import FEATURE_SETS
    from stocktrend.platform.data.universes import AUTO_LABEL, data_defaults, default_label, spec
    if label not in (AUTO_LABEL, *LABELS):
        raise typer.BadParameter(f"unknown label kind {label!r}; use {', '.join((AUTO_LABEL, *LABELS))}")
    if data is None:
        spec(universe)  # an unknown name fails here, before any work
    if label == AUTO_LABEL:
        label = default_label(None if data is not None else universe, data, _split_list(ticker) or ())
    d = data_defaults(None if data is not None else universe)
    features = features or d["features"]
    if features not in FEATURE_SETS:
        raise typer.BadParameter(f"unknown feature set {features!r}; use {', '.join(FEATURE_SETS)}")
    return DataConfig(tickers=_split_list(ticker) or (), data_dir=data, universe=universe, market=_split_list(market),
                      indicators=_split_list(indicators) or (), horizon=horizon, label_kind=label,
                      sequence_length=sequence_length or d["sequence_length"],
                      top_k=d["top_k"] if top_k is None else top_k,
                      fractions=_fractions(split) if split else tuple(d["fractions"]), embargo=embargo,
                      ticker_id=ticker_id, features=features)
