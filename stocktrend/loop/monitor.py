"""``stocktrend monitor``: the offline twin of the endpoint's drift gauges, from batch scores (``stocktrend score``).

For one model version and a range of scored days: the same drift figures as a replica's (PSI of every model input
on the scored days against the checkpoint's training deciles, with its band; the class-mix shift against the
validation segment in percentage points; mean confidence against validation's; ``platform.evaluation.drift``), and,
for the days whose outcome is known by now, realised performance next to the baselines on the same (ticker, day)
pairs: hit rate (against "always up" and momentum) and, on panels, the daily rank IC with its Newey-West t.
The inputs are rebuilt for the scored days through the model's own feature path (features once per ticker), the
bars and the outcomes read a block of tickers at a time (``stocktrend.loop.score_source``).
Writes ``$STOCKTREND_HOME/reports/monitor-<name>-v<version>/monitor.md`` and ``.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from stocktrend.platform.data.sources import DataValidationError, as_of_day


@dataclass(frozen=True)
class MonitorOptions:
    model: str = "stocktrend@production"
    start: str | None = None
    end: str | None = None
    universe: str | None = None
    data_dir: str | None = None
    scores_dir: str | None = None  # default $STOCKTREND_HOME/scores


def monitor(opts: MonitorOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    from dataclasses import replace

    from stocktrend.loop import score_source
    from stocktrend.loop.replay_report import direction_hits, truth_of
    from stocktrend.loop.score import read_scores, resolve, ticker_windows
    from stocktrend.platform.data.cache import default_home
    from stocktrend.platform.evaluation.cross_section import MIN_NAMES, daily_ic, ic_summary
    from stocktrend.platform.evaluation.drift import band, drift_summary
    _check_days(opts.start, opts.end)
    m = resolve(opts.model)
    root = Path(opts.scores_dir) if opts.scores_dir else default_home() / "scores"
    scores = read_scores(root, m.name, m.version if m.version is not None else m.folder, opts.start, opts.end)
    if scores.empty:
        raise DataValidationError(f"no scores of {m.name} v{m.version} between {opts.start or 'the start'} and "
                                  f"{opts.end or 'the end'} under {root} (stocktrend score writes them)")
    scores["as_of"] = pd.to_datetime(scores["as_of"])
    lo, hi = scores["as_of"].min(), scores["as_of"].max()
    pred = m.pred
    spec = [{"transforms": pred.transforms.to_dict(), "seq_len": pred.seq_len,
             "ticker_id": bool(pred.transforms.tickers)}]
    fc = pred.ckpt["feature_config"]
    rows, keys = [], []
    # the scored tickers' bars, a block at a time (no process holds every ticker's: stocktrend.loop.score_source)
    source = score_source.scoring_source(pred, opts.universe, opts.data_dir)
    scored = set(scores["ticker"])
    have = scored & set(source.tickers) if source.tickers else scored  # a ticker gone from the source is skipped
    if not have:
        raise DataValidationError(f"none of the {len(scored)} scored tickers ({', '.join(sorted(scored)[:5])}) is in "
                                  f"{source.data_dir or source.universe}: give the --data or --universe they came from")
    source = replace(source, tickers=tuple(sorted(have)))
    for block in source.blocks(score_source.SURVEY_TICKERS):
        u = source.load(block, hi)
        score_source.check_known(pred, source, list(u.tickers))
        for frame in score_source.ticker_frames(u):
            out = ticker_windows(frame, u.market, u.indicators, fc, spec, lo, hi)
            rows.append(out["x_0"][:, -1])
            keys.append(pd.DataFrame({"ticker": out["ticker"], "as_of": pd.to_datetime(out["as_of"])}))
    x_last = pd.concat(keys, ignore_index=True).assign(_row=lambda d: np.arange(len(d)))
    x_last = x_last.merge(scores[["ticker", "as_of"]], on=["ticker", "as_of"])
    stacked = np.concatenate(rows)[x_last["_row"].to_numpy()] if rows else np.zeros((0, 0))
    drift = drift_summary(pred.ckpt.get("reference"), stacked, pred.transforms.input_names,
                          scores["label"].tolist(), scores["confidence"].to_numpy())
    dated = scores.rename(columns={"as_of": "date"})
    outcomes = truth_of(pred.data_config if opts.data_dir is None and opts.universe is None else
                        _cfg(pred.data_config, opts), dated)
    joined = dated.merge(outcomes, on=["ticker", "date"], how="left")
    known = joined.dropna(subset=["fwd"])
    label = pred.kind.value
    realised: dict[str, Any] = {"days_known": int(known["date"].nunique()), "predictions_known": int(len(known)),
                                "label": label}
    if len(known):
        # The model's score (P(Alcista); P(Alcista) - P(Bajista) for 3 classes; the predicted value) against the
        # realised direction its label is about (the excess return's for market-neutral labels).
        known = known.assign(score=_score(known))
        realised["hit_rate"] = float(direction_hits(known["score"], known, label).mean())
        realised["always_up_hit_rate"] = float(direction_hits(pd.Series(1.0, index=known.index), known, label,
                                                              0.0).mean())
        realised["momentum_hit_rate"] = float(direction_hits(known["momentum"], known, label, 0.0).mean())
        if known["ticker"].nunique() >= MIN_NAMES:
            for who, col in (("model", "score"), ("momentum", "momentum")):
                ic = ic_summary(daily_ic(known.assign(score=known[col])), int(pred.ckpt["horizon"]))
                realised[f"{who}_rank_ic"], realised[f"{who}_rank_ic_t"] = ic["rank_ic_mean"], ic["rank_ic_t"]
    folder = default_home() / "reports" / f"monitor-{m.name}-v{m.version}"
    folder.mkdir(parents=True, exist_ok=True)
    result = {"model": m.name, "version": m.version, "days": [str(lo.date()), str(hi.date())],
              "predictions": int(len(scores)), "drift": {k: v for k, v in drift.items() if k != "psi"},
              "psi": dict(sorted(drift["psi"].items(), key=lambda kv: -kv[1])), "realised": realised}
    (folder / "monitor.json").write_text(json.dumps(result, indent=2, default=float))
    lines = [f"# Monitor: {m.name} v{m.version}, {lo.date()} .. {hi.date()}", "",
             f"{len(scores)} scored predictions; {realised['predictions_known']} with a known outcome.", "",
             "## Drift against the training reference", "",
             f"- largest input PSI: {drift['psi_max']:.3f} ({band(drift['psi_max'])}); bands: < 0.1 stable, 0.1-0.25 "
             f"moderate, > 0.25 significant (empty bins smoothed with half a count)",
             f"- class-mix shift against validation: "
             + ", ".join(f"{k} {v:+.1f} pp" for k, v in drift["class_shift_pp"].items()),
             f"- mean confidence {drift['mean_confidence']:.3f} (validation "
             f"{drift.get('reference_mean_confidence', float('nan')):.3f})", "",
             "| input | PSI | band |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {band(v)} |" for k, v in list(result["psi"].items())[:20]]
    lines += ["", "## Realised (outcomes known so far)", ""]
    lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in realised.items()]
    (folder / "monitor.md").write_text("\n".join(lines) + "\n")
    say(f"monitor      : {m.name} v{m.version}, {lo.date()} .. {hi.date()}, {len(scores):,} predictions")
    say(f"drift        : largest input PSI {drift['psi_max']:.3f} ({band(drift['psi_max'])}), class-mix shift "
        f"{drift['class_shift_max_pp']:.1f} pp, mean confidence {drift['mean_confidence']:.3f}")
    if len(known):
        say(f"realised     : hit rate {realised['hit_rate']:.3f} (always up {realised['always_up_hit_rate']:.3f}, "
            f"momentum {realised['momentum_hit_rate']:.3f}) over {realised['days_known']} days"
            + (f"; rank IC {realised['model_rank_ic']:.3f} (t {realised['model_rank_ic_t']:.1f}), momentum "
               f"{realised['momentum_rank_ic']:.3f}" if "model_rank_ic" in realised else ""))
    from stocktrend.loop import textfile
    prom = textfile.write(default_home(), m.name, m.version, realised)  # for Prometheus (stocktrend monitoring up)
    say(f"report       : {folder / 'monitor.md'} (Prometheus series: {prom})")
    result["report"] = str(folder / "monitor.md")
    result["prometheus_file"] = str(prom)
    return result


def _score(frame: pd.DataFrame) -> pd.Series:
    """One ranking score per stored prediction, as ``cross_section.score_of`` makes it from the model's output."""
    if "p_Neutral" in frame:
        return frame["p_Alcista"] - frame["p_Bajista"]
    if "p_Alcista" in frame:
        return frame["p_Alcista"]
    value = [c for c in frame.columns if c in ("return", "value", "excess_return", "rank")]
    if not value:
        raise DataValidationError(f"the scores have no probability or value column ({', '.join(frame.columns)})")
    return frame[value[0]]


def _cfg(cfg, opts: MonitorOptions):
    from dataclasses import replace
    return replace(cfg, data_dir=opts.data_dir, universe=opts.universe or cfg.universe)


def _check_days(start: str | None, end: str | None) -> None:
    if start and end and as_of_day(start) > as_of_day(end):
        raise DataValidationError(f"--start {start} is after --end {end}")
