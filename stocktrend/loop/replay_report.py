"""The replay's report: what each policy's served predictions were worth once their outcomes became known.

Every trading day of the replay is answered by the version each policy had in ``production`` at the last step
(gated, always, never). Those versions score the days they served (a Ray task per ticker: features once, each serving
version's windows), and each prediction is joined with the outcome that became known later, read from the full data
(the report is the only part of the replay that looks past the step days, and only at outcomes). Per policy and for
the momentum baseline (the trailing ``horizon``-day return as the score), on the same days: the daily IC and rank IC
of the score against the realised ``horizon``-day return with Newey-West t (``horizon - 1`` lags: consecutive days'
outcomes overlap), the hit rate (the predicted direction against the realised one: of the return, or of the excess
return for market-neutral labels), the long-short (top third minus bottom third, daily, after costs) and long-only
(top third) portfolios next to the equal-weight hold. The verdict compares gated with never on realised rank IC: the
mean daily difference with a Newey-West 95% interval (on a one-ticker universe, where a cross-section does not exist,
on the daily hit rate instead).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from stocktrend.platform.evaluation.cross_section import (MIN_NAMES, daily_ic, ic_summary, long_short, newey_west_se,
                                                       newey_west_t, score_of)

POLICY_NAMES = ("gated", "gated-refit", "always", "never")
ABSTAIN = 0  # the version "served" on days a policy has no model that passed the gate's floors


def registry_name(name: str) -> str:
    """The replay's own registered-model name (its versions never touch the user's names or aliases)."""
    return f"replay-{name}"


def serving_plan(steps: list[pd.Timestamp], span: pd.DatetimeIndex, state) -> pd.DataFrame:
    """One row per (day, policy): the version in production that day."""
    rows = []
    for k, day in enumerate(steps):
        hi = steps[k + 1] if k + 1 < len(steps) else span[-1] + pd.Timedelta(days=1)
        rec = state.steps[str(k)]
        for d in span[(span >= day) & (span < hi)]:
            for p in POLICY_NAMES:
                if rec.get(p) is not None:  # gated-refit: only in replays that refit
                    rows.append({"date": d, "policy": p, "version": int(rec[p]), "step": k})
    return pd.DataFrame(rows)


def score_served(frame: pd.DataFrame, context: tuple[dict, dict], feature_config: dict,
                 jobs: list[tuple[str, str, int]], models: dict[int, tuple[str, str]]) -> pd.DataFrame:
    """One ticker (a Ray task): features once, then every (first day, last day, version) job's windows and scores.
    ``context``: the market and indicator series."""
    market, indicators = context
    import os

    from stocktrend.loop.score import ticker_windows
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.jobs import resolve_model
    loaded: dict[int, Any] = {}
    out = []
    for lo, hi, version in jobs:
        if version not in loaded:
            path, pinned = models[version]
            loaded[version] = Predictor.load(path if os.path.isfile(path) else resolve_model(pinned)[0])
        pred = loaded[version]
        spec = [{"transforms": pred.transforms.to_dict(), "seq_len": pred.seq_len,
                 "ticker_id": bool(pred.transforms.tickers)}]
        block = ticker_windows(frame, market, indicators, feature_config, spec, pd.Timestamp(lo), pd.Timestamp(hi))
        if not len(block["ticker"]):
            continue
        raw, _ = pred.predict_proba(block["x_0"])
        k = len(pred.class_names)
        score = score_of(raw[:, :1] if pred.task.is_regression else raw[:, :k], pred.kind)
        out.append(pd.DataFrame({"ticker": block["ticker"].astype(str), "date": block["as_of"], "version": version,
                                 "score": score}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["ticker", "date", "version", "score"])


def truth(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (ticker, day): the realised ``horizon``-day return, its excess over the day's mean, the next day's return,
    and the trailing ``horizon``-day return (the momentum baseline), from the whole data."""
    from stocktrend.platform.data.universes import load_universe
    u = load_universe(cfg.data_dir, list(cfg.tickers) or None, universe=cfg.universe)
    out = pd.concat([_ticker_truth(t, f, cfg.horizon) for t, f in u.tickers.items()], ignore_index=True)
    out["excess"] = out["fwd"] - out.groupby("date")["fwd"].transform("mean")
    return out, u


def truth_of(cfg, keys: pd.DataFrame) -> pd.DataFrame:
    """``truth``'s rows for the (ticker, date) pairs of ``keys`` only, the data read a block of tickers at a time
    (``stocktrend.loop.score_source``): the day's mean forward return that ``excess`` subtracts is summed over every
    ticker of the universe, block by block, so it equals the whole read's."""
    from stocktrend.loop import score_source
    source = score_source.source_of(cfg)
    wanted = keys[["ticker", "date"]].drop_duplicates()
    sums, kept = None, []
    for block in source.blocks(score_source.SURVEY_TICKERS):
        u = source.load(block, None)
        if not u.tickers:
            continue
        rows = pd.concat([_ticker_truth(t, f, cfg.horizon) for t, f in u.tickers.items()], ignore_index=True)
        day = rows.groupby("date")["fwd"].agg(["sum", "count"])
        sums = day if sums is None else sums.add(day, fill_value=0)
        kept.append(rows.merge(wanted, on=["ticker", "date"]))
    if not kept:
        return pd.DataFrame(columns=["ticker", "date", "fwd", "ret1", "momentum", "excess"])
    out = pd.concat(kept, ignore_index=True)
    out["excess"] = out["fwd"] - out["date"].map(sums["sum"] / sums["count"].where(sums["count"] > 0))
    return out


def _ticker_truth(ticker: str, f: pd.DataFrame, h: int) -> pd.DataFrame:
    from stocktrend.platform.data.labels import forward_returns
    c = f["close"].to_numpy(dtype=np.float64)
    trailing = np.full(len(c), np.nan)
    trailing[h:] = c[h:] / c[:-h] - 1
    return pd.DataFrame({"ticker": ticker, "date": f.index, "fwd": forward_returns(c, h),
                         "ret1": forward_returns(c, 1), "momentum": trailing})


def direction_threshold(label_kind: str) -> float:
    """The score at or above which a prediction says "up": P(Alcista) >= 0.5 for the two-class labels; 0 for the
    3-class score (P(Alcista) - P(Bajista)) and for value labels (a return, an excess return, a rank)."""
    return 0.5 if label_kind in ("binary", "excess") else 0.0


def direction_hits(score: pd.Series, frame: pd.DataFrame, label_kind: str, threshold: float | None = None
                   ) -> pd.Series:
    """Per prediction: did the score's direction match the realised one? The realised direction follows the label:
    the forward return's for ``binary``, ``ternary`` and ``regression``, the excess return's (over the day's mean) for
    the market-neutral labels."""
    from stocktrend.platform.data.labels import LabelKind
    realised = frame["excess"] if LabelKind(label_kind).cross_sectional else frame["fwd"]
    t = direction_threshold(label_kind) if threshold is None else threshold
    return (score >= t) == (realised >= 0)


def policy_metrics(frame: pd.DataFrame, horizon: int, cost_bps: float, neutral: bool, panel: bool,
                   threshold: float = 0.0, days: pd.DatetimeIndex | None = None) -> dict[str, Any]:
    """Realised figures of one policy's (or baseline's) served scores. ``neutral``: the direction that counts is the
    excess return's (market-neutral labels). ``days``: every day the policy answered; a day it abstained (no model
    passed the floors yet) counts as a rank IC of 0."""
    f = frame.dropna(subset=["fwd"])
    target = f["excess"] if neutral else f["fwd"]
    hits = (f["score"] >= threshold) == (target >= 0)  # as direction_hits, with the caller's threshold
    out: dict[str, Any] = {"days": int(f["date"].nunique()), "predictions": int(len(f)),
                           "hit_rate": float(hits.mean()) if len(f) else float("nan")}
    out["daily_hit"] = hits.groupby(f["date"]).mean()
    if panel:
        ic = daily_ic(f)
        s = ic_summary(ic, horizon)
        daily = ic.set_index("date")["rank_ic"]
        if days is not None and len(days) > len(daily):
            daily = daily.reindex(pd.DatetimeIndex(days), fill_value=0.0)
        lags = max(0, horizon - 1)
        mean, se = (float(daily.mean()) if len(daily) else float("nan")), newey_west_se(daily.to_numpy(), lags)
        out.update(ic=s["ic_mean"], ic_t=s["ic_t"], rank_ic=mean, rank_ic_t=newey_west_t(daily.to_numpy(), lags),
                   rank_ic_ci=(mean - 1.96 * se, mean + 1.96 * se), daily_rank_ic=daily)
        g = frame.dropna(subset=["ret1"])
        if len(g):
            ls, hold = long_short(g, cost_bps)
            lo, _ = long_short(g, cost_bps, long_only=True)
        else:  # a policy that abstained throughout (no model passed the floors): no position
            from stocktrend.platform.evaluation.metrics import backtest_stats
            ls = lo = hold = backtest_stats("none", np.zeros(1), np.zeros(1))
    else:
        out.update(ic=float("nan"), ic_t=float("nan"), rank_ic=float("nan"), rank_ic_t=float("nan"),
                   rank_ic_ci=(float("nan"), float("nan")), daily_rank_ic=pd.Series(dtype=float))
        from stocktrend.platform.evaluation.metrics import backtest_stats
        g = frame.dropna(subset=["ret1"]).sort_values("date")
        pos = (g["score"] >= threshold).to_numpy(dtype=float)
        cost = np.abs(np.diff(np.concatenate([[0.0], pos]))) * cost_bps / 1e4
        lo = backtest_stats("long_only", pos * g["ret1"].to_numpy() - cost, pos)
        ls = backtest_stats("long_short", np.zeros(len(g)), np.zeros(len(g)))
        hold = backtest_stats("hold", g["ret1"].to_numpy(), np.ones(len(g)))
    out.update(long_short=ls, long_only=lo, hold=hold)
    return out


def verdict(gated: dict, never: dict, horizon: int, panel: bool) -> tuple[str, dict[str, float]]:
    key, what = ("daily_rank_ic", "rank IC") if panel else ("daily_hit", "hit rate")
    a, b = gated[key].align(never[key], join="inner")
    diff = (a - b).dropna().to_numpy()
    if len(diff) < 3:
        return f"not enough days to compare gated with never on realised {what}", {}
    mean, se = float(diff.mean()), newey_west_se(diff, max(0, horizon - 1))
    lo, hi = mean - 1.96 * se, mean + 1.96 * se
    if lo > 0:
        word = "gated retraining BEAT never retraining"
    elif hi < 0:
        word = "never retraining BEAT gated retraining"
    else:
        word = "no difference shown between gated and never retraining"
    return (f"{word} on realised {what}: gated - never = {mean:+.4f} per day (95% CI {lo:+.4f} .. {hi:+.4f}, "
            f"Newey-West, {len(diff)} days)"), {"diff": mean, "ci_low": lo, "ci_high": hi, "days": len(diff)}


def report(opts, cfg, steps, span, state, say: Callable[[str], None]) -> dict[str, Any]:
    import ray

    from stocktrend.platform.data.sources import DataValidationError
    from stocktrend.platform.data.universes import load_universe
    from stocktrend.platform.registry import mlflow_registry as registry
    plan = serving_plan(steps, span, state)
    name = registry_name(opts.name)
    models = {int(r["version"]): (r["checkpoint"], f"{name}@{r['version']}") for r in state.steps.values()}
    models.update({int(r["refit"]): (r.get("refit_checkpoint", ""), f"{name}@{r['refit']}")
                   for r in state.steps.values() if r.get("refit")})
    u = load_universe(cfg.data_dir, list(cfg.tickers) or None, universe=cfg.universe, as_of=span[-1])
    jobs = []
    for (step, version), g in plan[plan["version"] != ABSTAIN].groupby(["step", "version"]):
        jobs.append((str(g["date"].min().date()), str(g["date"].max().date()), int(version)))
    from stocktrend.platform.registry.checkpoint import read_checkpoint
    fc = read_checkpoint(models[min(models)][0])["feature_config"]
    task = ray.remote(num_cpus=1)(score_served)
    context = ray.put((u.market, u.indicators))  # once in the object store; each task gets it resolved
    futures = []
    for t, f in u.tickers.items():
        frame = f.reset_index().rename(columns={f.index.name or "index": "date"}).assign(ticker=t)
        futures.append(task.remote(frame, context, fc, jobs, models))
    scored = pd.concat(ray.get(futures), ignore_index=True)
    if scored.empty:
        raise DataValidationError("no served prediction: the replay's days have no full window")
    scored["date"] = pd.to_datetime(scored["date"])
    outcomes, _ = truth(cfg)
    panel = len(u.tickers) >= MIN_NAMES
    from stocktrend.platform.data.labels import LabelKind
    neutral = LabelKind(cfg.label_kind).cross_sectional
    threshold = direction_threshold(cfg.label_kind)
    known = set(outcomes.dropna(subset=["fwd"])["date"])
    results, frames = {}, {}
    for p in POLICY_NAMES:
        served = plan[plan["policy"] == p][["date", "version"]]
        if served.empty:
            continue
        f = scored.merge(served, on=["date", "version"]).merge(outcomes, on=["ticker", "date"], how="left")
        frames[p] = f
        answered = pd.DatetimeIndex(sorted(d for d in served["date"].unique() if d in known))
        results[p] = policy_metrics(f, cfg.horizon, opts.cost_bps, neutral, panel, threshold, answered)
    days = frames["never"][["ticker", "date"]]
    mom = days.merge(outcomes, on=["ticker", "date"], how="left").assign(score=lambda d: d["momentum"])
    results["momentum"] = policy_metrics(mom.dropna(subset=["score"]), cfg.horizon, opts.cost_bps, neutral, panel,
                                         0.0)
    served = pd.concat([f.assign(policy=p) for p, f in frames.items()], ignore_index=True)
    line, ci = verdict(results["gated"], results["never"], cfg.horizon, panel)
    from stocktrend.platform.data.cache import default_home
    folder = default_home() / "reports" / f"replay-{opts.name}"
    folder.mkdir(parents=True, exist_ok=True)
    served[["date", "ticker", "policy", "version", "score", "fwd", "excess", "ret1"]].to_parquet(
        folder / "served.parquet", index=False)  # every served prediction with its outcome
    md = write_markdown(opts, steps, state, results, line, plan, folder)
    png = plot(results, plan, folder)
    headline = {p: {k: (v.sharpe if hasattr(v, "sharpe") else v) for k, v in r.items()
                    if k in ("rank_ic", "rank_ic_t", "rank_ic_ci", "ic", "hit_rate", "long_short", "long_only",
                             "days")}
                for p, r in results.items()}
    (folder / "replay.json").write_text(json.dumps({"verdict": line, "verdict_ci": ci, "policies": headline},
                                                   indent=2, default=float))
    with registry.tracked_run(f"replay-{opts.name}-report", {"replay": opts.name, "steps": len(steps)},
                              tags={"stocktrend.loop": "replay"}):
        import mlflow
        mlflow.log_artifacts(str(folder))
        mlflow.log_metrics({f"{p}_{k}": float(v) for p, r in headline.items() for k, v in r.items()
                            if isinstance(v, (int, float)) and np.isfinite(v)})
    for p in results:
        r = results[p]
        lo, hi = r["rank_ic_ci"]
        say(f"realised {p}: rank IC {r['rank_ic']:.3f} (t {r['rank_ic_t']:.1f}, 95% {lo:+.3f} .. {hi:+.3f}), hit rate "
            f"{r['hit_rate']:.3f}, "
            f"long-short Sharpe {r['long_short'].sharpe:.2f}, long-only Sharpe {r['long_only'].sharpe:.2f} "
            f"(equal-weight hold {r['hold'].sharpe:.2f})")
    say(f"verdict: {line}")
    say(f"report: {md} (+ {png.name}; logged to MLflow run replay-{opts.name}-report)")
    return {"report": str(md), "verdict": line, "verdict_ci": ci, "policies": headline, "steps": len(steps)}


def write_markdown(opts, steps, state, results, line, plan, folder: Path) -> Path:
    lines = [f"# Replay {opts.name}", "",
             f"{len(steps)} steps every {opts.every} trading days from {steps[0].date()}; {opts.model} "
             f"({opts.preset}); label {opts.label}; the replay's registry follows the {opts.policy} policy.", "",
             "## Steps (gated policy)", "", "| step | day | trained | gate vs | result | challenger | champion | "
             "production after |", "|---|---|---|---|---|---|---|---|"]
    for k in range(len(steps)):
        r = state.steps[str(k)]
        g = r.get("gate")
        if g:
            key = next(iter(g["metrics"]["challenger"]))
            lines.append(f"| {k + 1} | {r['day']} | v{r['version']} | v{g['champion']} | "
                         f"{'pass' if g['passed'] else 'fail'} | {key} {g['metrics']['challenger'][key]:.3f} | "
                         f"{g['metrics'].get('champion', {}).get(key, float('nan')):.3f} | v{r['gated']} |")
        else:
            lines.append(f"| {k + 1} | {r['day']} | v{r['version']} | | first model | | | v{r['gated']} |")
    tenure = plan[plan["policy"] == "gated"].groupby("version")["date"].agg(["min", "max", "count"])
    lines += ["", "Tenure of each production version (gated):", "", "| version | from | to | days |", "|---|---|---|---|"]
    lines += [f"| v{v} | {t['min'].date()} | {t['max'].date()} | {t['count']} |" for v, t in tenure.iterrows()]
    lines += ["", "## Realised (each prediction against the outcome known later; the same days for every row)", "",
              "| | days | rank IC (t) | IC (t) | hit rate | long-short Sharpe | long-short annual | long-only Sharpe | "
              "equal-weight hold Sharpe |", "|---|---|---|---|---|---|---|---|---|"]
    for p, r in results.items():
        lo, hi = r["rank_ic_ci"]
        lines.append(f"| {p} | {r['days']} | {r['rank_ic']:.4f} ({r['rank_ic_t']:.2f}; 95% {lo:+.3f} .. {hi:+.3f}) | "
                     f"{r['ic']:.4f} "
                     f"({r['ic_t']:.2f}) | {r['hit_rate']:.3f} | {r['long_short'].sharpe:.2f} | "
                     f"{r['long_short'].annual_return:+.1%} | {r['long_only'].sharpe:.2f} | {r['hold'].sharpe:.2f} |")
    lines += ["", f"**Verdict:** {line}", ""]
    md = folder / "replay.md"
    md.write_text("\n".join(lines))
    return md


def plot(results, plan, folder: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 1, figsize=(9, 9))
    for p, r in results.items():
        if len(r["daily_rank_ic"]):
            s = r["daily_rank_ic"].sort_index()
            axes[0].plot(pd.to_datetime(s.index), s.cumsum(), label=p)
        axes[1].plot(np.log(r["long_short"].equity), label=p)
    axes[0].set_ylabel("cumulative daily rank IC")
    axes[1].set_ylabel("log long-short equity (after costs)")
    g = plan[plan["policy"] == "gated"].groupby("date")["version"].first()
    axes[2].step(pd.to_datetime(g.index), g.to_numpy(), where="post")
    axes[2].set_ylabel("production version (gated)")
    for ax in axes[:2]:
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "replay.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
