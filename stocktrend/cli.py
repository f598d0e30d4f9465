"""The ``stocktrend`` command. Thin: parses flags, calls library functions, prints summaries.

Errors a user can fix (bad files, unknown tickers, impossible configs) are printed as one ``error:`` line with exit
code 2, never as a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, tune and serve stock-trend models on Ray (not financial advice).")
data_app = typer.Typer(no_args_is_help=True, help="Build and inspect data sets.")
app.add_typer(data_app, name="data")

STATE = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors in the log.")) -> None:
    STATE["debug"] = debug
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


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
    from stocktrend.platform.dataset import DataConfig, build_dataset
    if label not in ("binary", "ternary", "regression"):
        raise typer.BadParameter(f"unknown label kind {label!r}; use binary, ternary or regression")
    cfg = DataConfig(tickers=_split_list(ticker) or (), data_dir=data, market=_split_list(market),
                     indicators=_split_list(indicators) or (), horizon=horizon, label_kind=label,
                     sequence_length=sequence_length, top_k=top_k, fractions=_fractions(split), embargo=embargo)
    prepared = build_dataset(cfg, cache_dir=cache_dir, use_cache=not no_cache)
    summary = prepared.summary()
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


def main() -> None:
    from stocktrend.platform.sources import DataValidationError
    try:
        app()
    except (DataValidationError, ValueError, FileNotFoundError) as exc:
        if STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
