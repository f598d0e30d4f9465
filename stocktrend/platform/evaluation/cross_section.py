"""Cross-sectional evaluation of a panel: does the model rank tickers against each other on the same day?

- Score of a prediction: P(Alcista) for the binary label, P(Alcista) - P(Bajista) for three classes, the predicted
  return for regression. Majority-class "scores" are constant and have no ranking (their IC is NaN).
- Daily information coefficient (IC, Pearson) and rank IC (Spearman) of the score against the realised forward return
  (the label's ``horizon`` days) across the tickers of each test day with at least ``MIN_NAMES`` tickers; mean, sd,
  IR (mean / sd, per day) and a t-statistic with Newey-West standard errors at ``horizon - 1`` lags, because
  consecutive days' forward returns overlap by ``horizon - 1`` days.
- Long-short: every day, long the top third of tickers by score and short the bottom third (at least one each, equal
  weights, dollar neutral), rebalanced daily on the next day's close-to-close return, ``cost_bps`` per unit of weight
  traded; next to an equal-weight buy-and-hold of all tickers. Same rules for every baseline.
- Per-ticker classification scores next to the pooled ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stocktrend.models.rank_ic import MIN_NAMES
from stocktrend.platform.data.dataset import PreparedData
from stocktrend.platform.data.labels import LabelKind
from stocktrend.platform.evaluation.metrics import Backtest, backtest_stats, classification_scores



def score_of(out: np.ndarray, kind: LabelKind) -> np.ndarray:
    """Model output -> one ranking score per sample (see the module docstring)."""
    out = np.asarray(out, dtype=np.float64)
    if kind.is_value:
        return out.reshape(len(out), -1)[:, 0]
    if out.shape[1] == 2:
        return out[:, 1]
    return out[:, -1] - out[:, 0]


def prediction_frame(data: PreparedData, rows: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """One row per sample: day, ticker, score, the realised forward return and the next day's return."""
    close = data.panel.meta["close"].to_numpy()
    ticker_idx = np.searchsorted(data.offsets, rows, side="right") - 1
    end = data.offsets[ticker_idx + 1]
    nxt = np.minimum(rows + 1, end - 1)
    ret1 = np.where(rows + 1 < end, close[nxt] / close[rows] - 1, np.nan)
    return pd.DataFrame({"date": data.dates[rows], "ticker": np.asarray(data.tickers)[ticker_idx],
                         "score": score, "fwd": data.forward_return[rows], "ret1": ret1})


def daily_ic(frame: pd.DataFrame, min_names: int = MIN_NAMES) -> pd.DataFrame:
    """Per test day: IC, rank IC and the number of tickers (days with fewer than ``min_names`` or a constant score or
    return are left out)."""
    rows = []
    for date, g in frame.dropna(subset=["fwd"]).groupby("date", sort=True):
        if len(g) < min_names or g["score"].nunique() < 2 or g["fwd"].nunique() < 2:
            continue
        rows.append({"date": date, "ic": float(np.corrcoef(g["score"], g["fwd"])[0, 1]),
                     "rank_ic": float(g["score"].rank().corr(g["fwd"].rank())), "n": len(g)})
    return pd.DataFrame(rows, columns=["date", "ic", "rank_ic", "n"])


def newey_west_se(x: np.ndarray, lags: int) -> float:
    """Standard error of the mean of ``x`` with Newey-West (Bartlett kernel, ``lags`` lags) autocorrelation-consistent
    variance: the one home of the platform's HAC estimate (the cross-section's t, the replay's intervals)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 3:
        return float("nan")
    d = x - x.mean()
    s = d @ d / n
    for lag in range(1, min(lags, n - 1) + 1):
        s += 2 * (1 - lag / (lags + 1)) * (d[lag:] @ d[:-lag]) / n
    return float(np.sqrt(s / n)) if s > 0 else float("nan")


def newey_west_t(x: np.ndarray, lags: int) -> float:
    """t-statistic of the mean of ``x`` with Newey-West (Bartlett) standard errors."""
    se = newey_west_se(x, lags)
    return float(np.mean(x) / se) if np.isfinite(se) else float("nan")


def ic_summary(ic: pd.DataFrame, horizon: int) -> dict[str, float]:
    out: dict[str, float] = {"days": float(len(ic))}
    for col in ("ic", "rank_ic"):
        v = ic[col].to_numpy() if len(ic) else np.zeros(0)
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        out[f"{col}_mean"] = float(v.mean()) if len(v) else float("nan")
        out[f"{col}_ir"] = out[f"{col}_mean"] / sd if sd and sd > 0 else float("nan")
        out[f"{col}_t"] = newey_west_t(v, max(0, horizon - 1))
    return out


def long_short(frame: pd.DataFrame, cost_bps: float = 5.0, fraction: float = 1 / 3, name: str = "model",
               long_only: bool = False) -> tuple[Backtest, Backtest]:
    """Top-minus-bottom portfolio after costs (``long_only``: the top ``fraction`` alone, fully invested, equal
    weights), and the equal-weight buy-and-hold of the same tickers and days."""
    f = frame.dropna(subset=["ret1"])
    scores = f.pivot(index="date", columns="ticker", values="score").sort_index()
    rets = f.pivot(index="date", columns="ticker", values="ret1").reindex_like(scores)
    w = np.zeros(scores.shape)
    for i, row in enumerate(scores.to_numpy()):
        ok = np.flatnonzero(~np.isnan(row))
        if len(ok) < 2 or np.nanstd(row[ok]) == 0:
            continue  # one ticker, or no ranking: stay flat
        k = max(1, int(len(ok) * fraction))
        order = ok[np.argsort(row[ok], kind="stable")]
        w[i, order[-k:]] += 1.0 / k
        if not long_only:
            w[i, order[:k]] -= 1.0 / k
    r = np.nan_to_num(rets.to_numpy())
    cost = np.abs(np.diff(np.vstack([np.zeros(w.shape[1]), w]), axis=0)).sum(1) * cost_bps / 1e4
    daily = (w * r).sum(1) - cost
    held = ~np.isnan(rets.to_numpy())
    ew = np.where(held.any(1), np.nansum(np.where(held, r, 0), 1) / np.maximum(held.sum(1), 1), 0.0)
    ew[0] -= cost_bps / 1e4
    return (backtest_stats(name, daily, np.abs(w).sum(1) / (1 if long_only else 2)),
            backtest_stats("equal_weight_hold", ew, np.ones(len(ew))))


def evaluate_panel(data: PreparedData, outputs: dict[str, np.ndarray], cost_bps: float = 5.0
                   ) -> dict[str, Any]:
    """IC, rank IC, long-short after costs for the model and every baseline; per-ticker scores of each."""
    rows = data.samples["test"]
    kind = data.kind
    y = data.targets(rows)
    tickers = data.ticker_of(rows)
    result: dict[str, Any] = {"ic": {}, "ic_daily": {}, "long_short": {}, "per_ticker": {}}
    hold = None
    for name, out in outputs.items():
        frame = prediction_frame(data, rows, score_of(out, kind))
        ic = daily_ic(frame)
        result["ic_daily"][name] = ic
        result["ic"][name] = ic_summary(ic, data.config.horizon)
        strat, hold = long_short(frame, cost_bps, name=name)
        result["long_short"][name] = strat
        if not kind.is_value:
            result["per_ticker"][name] = {
                t: classification_scores(y[tickers == t], np.asarray(out)[tickers == t], list(kind.class_names), 0)
                for t in data.tickers if (tickers == t).any()}
    result["long_short"]["equal_weight_hold"] = hold
    return result


def report_lines(res: dict[str, Any]) -> list[str]:
    """Markdown for the report: IC table, long-short table, per-ticker table of the model."""
    lines = ["## Cross-section (test segment, every ticker of the panel)", "",
             f"Daily IC / rank IC of the score against the realised forward return across tickers (days with >= "
             f"{MIN_NAMES} tickers; t-statistics with Newey-West errors for overlapping returns). Long-short: top third "
             f"minus bottom third by score, rebalanced daily, after costs.", "",
             "| | days | IC mean | IC t | rank IC mean | rank IC t | rank IC IR | long-short Sharpe | annual return |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in res["ic"].items():
        ls = res["long_short"][name]
        lines.append(f"| {name} | {int(s['days'])} | {s['ic_mean']:.3f} | {s['ic_t']:.2f} | {s['rank_ic_mean']:.3f} | "
                     f"{s['rank_ic_t']:.2f} | {s['rank_ic_ir']:.3f} | {ls.sharpe:.2f} | {ls.annual_return:+.1%} |")
    hold = res["long_short"]["equal_weight_hold"]
    lines += [f"| equal-weight buy-and-hold | | | | | | | {hold.sharpe:.2f} | {hold.annual_return:+.1%} |", ""]
    if "model" in res["per_ticker"]:
        lines += ["Per ticker (model vs majority class):", "", "| ticker | n | accuracy | balanced acc. | AUC | "
                  "majority acc. |", "|---|---|---|---|---|---|"]
        maj = res["per_ticker"].get("majority", {})
        for t, s in res["per_ticker"]["model"].items():
            lines.append(f"| {t} | {s['n']} | {s['accuracy']:.3f} | {s['balanced_accuracy']:.3f} | {s['auc']:.3f} | "
                         f"{maj.get(t, {}).get('accuracy', float('nan')):.3f} |")
        lines.append("")
    return lines


def plot_cumulative_ic(res: dict[str, Any], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, ic in res["ic_daily"].items():
        if len(ic):
            ax.plot(pd.to_datetime(ic["date"]), ic["rank_ic"].cumsum(), label=name)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("cumulative rank IC")
    ax.set_title("cumulative daily rank IC (test)")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
