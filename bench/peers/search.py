"""The same hyper-parameter search three ways, side by side on the same data (issue 29): the platform's
``stocktrend tune`` (Ray Tune + Optuna TPE + ASHA), plain Optuna (TPE + SuccessiveHalvingPruner, two worker
processes on one SQLite study) training the platform's own Lightning module, and neuralforecast 3.3's ``AutoLSTM``
(Ray Tune + ASHA) on the same ticker's returns. One table: wall time, trial-epochs per hour, best validation metric,
test AUC and rank IC, per seed, with medians and the wall-time ratio to the platform.

    python bench/peers/search.py                                  # 3 seeds x 3 systems (~25 min on 2 cores)
    python bench/peers/search.py --quick                          # CI smoke: platform + optuna, 1 seed, tiny
    python bench/peers/search.py --quick --peers platform,optuna,neuralforecast
    python bench/peers/search.py --seeds 1 --peers platform,neuralforecast --trials 16

Systems (all three see the embedded ``msft`` universe, ticker MSFT by default, and its chronological 80/10/10 split):
(a) platform: ``python -m stocktrend.tune.search --model lstm --preset small --max-concurrent 2 --cpus-per-worker 1
    --seed S --epoch-windows W --no-register ...`` in the platform's own venv, a private local Ray instance.
(b) optuna: bench/peers/.venvs/optuna (torch, then ``-e .`` (this checkout) and ``optuna-integration``; no Ray Tune is
    used). ``optuna.create_study`` on one SQLite file (TPESampler(seed=S), SuccessiveHalvingPruner(min_resource=
    grace, reduction_factor=rf, min_early_stopping_rate=0)) and the preset default enqueued as the first trial; then two
    worker processes ``load_study`` + ``optimize`` with ``MaxTrialsCallback(trials)``. The objective rebuilds the
    windows with ``stocktrend.platform.data.dataset.prepare`` and trains ``make_module`` / ``build_trainer`` /
    ``data_module`` (stocktrend.platform.training.local) exactly as a platform trial does (same TrainConfig: lr, max_lr
    = 5 lr, weight decay, accumulation 1, seed S, epoch_windows), pruning each epoch through
    ``optuna_integration.PyTorchLightningPruningCallback(monitor=val_loss)``. Worker k's sampler is seeded S + 1000 k
    (two samplers with one seed would propose identical random start-up points).
(c) neuralforecast: bench/peers/.venvs/neuralforecast (torch, then ``neuralforecast==3.3.*``: pytorch_lightning, no
    ``lightning``). ``AutoLSTM(h=5, loss=MAE(), backend="ray", search_alg=ConcurrencyLimiter(OptunaSearch(TPE seed S,
    the preset default first), 2), ray_options=RayOptions(scheduler=ASHAScheduler(max_t, grace, rf), cpus=1, gpus=0))``
    inside ``NeuralForecast.cross_validation(n_windows=<test days>, step_size=1, val_size=<validation days>,
    refit=False)`` on a private ``ray.init(address="local", _temp_dir=...)`` with 2 CPUs. Target: the daily log return
    log(c_t / c_t-1); the forecast of the 5-day forward return is the sum of the h=5 predicted daily log returns
    (= log(c_t+5 / c_t)), scored by its sign against the platform's binary label (c_t+5 / c_t - 1 >= 0) on the same
    test days. One NF "epoch" (one ASHA ``training_iteration``, one validation) = ceil(W / windows_batch_size) steps of
    windows_batch_size windows, i.e. about the W windows of a platform epoch (W = --epoch-windows; with 0, the
    platform's default, every window of the oversampled training segment at the preset's window length).

Fairness rules: the same search space (the platform's space for the model/preset, converted to Optuna distributions
by Ray's own ``OptunaSearch.convert_search_space`` and handed to (b) as suggest_* calls; (c) searches the same ranges
under neuralforecast's names: sequence_length -> input_size, hidden -> encoder_hidden_size, layers ->
encoder_n_layers, dropout -> encoder_dropout, lr -> learning_rate, batch_size -> windows_batch_size; top_k (feature
selection) and weight_decay have no AutoLSTM counterpart on a univariate series and are not searched there), the same
number of trials, the same max epochs, the same successive-halving settings (grace period = min_resource, reduction
factor), the preset default evaluated first, the same CPUs: 2 concurrent trials x 1 CPU each, 1 torch thread per
trial (Ray sets OMP_NUM_THREADS=1 for 1-CPU trials; the platform and (b) call torch.set_num_threads(1)).

What differs by design: Optuna's pruner sees epoch steps 0-based (the Lightning callback reports
``current_epoch``), so with min_resource=g it judges a trial after g + 1, g*rf + 1, ... epochs where ASHA judges after
g, g*rf, ... (Ray's training_iteration is 1-based); (b)'s objective returns the trial's best-epoch val_loss, while Ray's
OptunaSearch tells TPE the last reported value; (c) trains in fp32 (neuralforecast's default) while the platform's
build_trainer picks bf16-mixed on CPUs with bf16 (used by both (a) and (b)).

Metrics: wall = from launching the system to the end of its search (process start-up, imports, Ray start, data
preparation included; for (c) its refit and test predictions are excluded and reported separately). trial-epochs =
epochs trained over all trials (ASHA's training_iteration for (a) and (c), epochs seen by the pruning callback for
(b)); trial-epochs/h = trial-epochs / wall hours. best val = the best validation value over all trials and epochs
(val_loss, the platform's class-weighted label-smoothed cross-entropy, for (a) and (b); validation MAE of daily log
returns for (c)). Test: (a) and (b) = the best trial's best-epoch checkpoint (Tune's kept checkpoint / (b)'s saved
best-epoch weights) evaluated on the platform's test windows, no refit; (c) = neuralforecast's own refit of the best
config (AutoLSTM always refits, here on train + validation, as refit_with_val=False does). test AUC = ROC AUC of the
score (P(up) for a/b, the predicted 5-day log return for c) against the platform's binary test labels; rank IC = the
Spearman correlation of the score with the realised 5-day forward return over all test windows (pooled; with one
ticker it is a time-series rank IC, not a daily cross-section).

Every subprocess runs in its own process group with a bound (``--timeout`` per system and seed); Ctrl-C or a
timeout kills the group. A failed system is named, the other systems still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SYSTEMS = ("platform", "optuna", "neuralforecast")
OPTUNA_PACKAGES = [["-e", str(ROOT), "optuna-integration"]]
NF_PACKAGES = [["neuralforecast==3.3.*"]]
# The platform's parameter -> AutoLSTM's (LSTM's) constructor argument.
NF_NAMES = {"sequence_length": "input_size", "hidden": "encoder_hidden_size", "layers": "encoder_n_layers",
            "dropout": "encoder_dropout", "lr": "learning_rate", "batch_size": "windows_batch_size"}
HORIZON = 5


class SystemFailed(RuntimeError):
    """One system of the comparison failed (message names it)."""


# ---------------------------------------------------------------------------------------------------------------------
# Subprocess control: every child in its own process group, bounded, killed on Ctrl-C
# ---------------------------------------------------------------------------------------------------------------------
_LIVE: list[subprocess.Popen] = []


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    out.write(f"$ {' '.join(cmd)}\n".encode())
    out.flush()
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                         start_new_session=True, cwd=str(ROOT))
    out.close()
    p.log = log  # type: ignore[attr-defined]
    _LIVE.append(p)
    return p


def _kill(p: subprocess.Popen) -> None:
    """SIGTERM the child's whole process group (its Ray instance, its workers), SIGKILL what is left after 15 s."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # stragglers of the group, even after the leader exited
    except (ProcessLookupError, PermissionError):
        pass
    if p in _LIVE:
        _LIVE.remove(p)


def _kill_all() -> None:
    for p in list(_LIVE):
        _kill(p)


def _tail(log: Path, n: int = 25) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"    | {ln}" for ln in lines[-n:])


def _wait(procs: list[subprocess.Popen], deadline: float, system: str) -> None:
    """Wait for every process; the first failure or the deadline kills the rest and raises SystemFailed."""
    while True:
        for p in procs:
            rc = p.poll()
            if rc not in (None, 0):
                for q in procs:
                    _kill(q)
                raise SystemFailed(f"{system}: process exited with status {rc} (log {p.log}):\n{_tail(p.log)}")
        if all(p.poll() == 0 for p in procs):
            for p in procs:
                _kill(p)  # reaps the group (nothing should be left)
            return
        if time.monotonic() > deadline:
            for p in procs:
                _kill(p)
            raise SystemFailed(f"{system}: timed out (bound {deadline - procs[0].t0:.0f} s; log {procs[0].log}):\n"
                               f"{_tail(procs[0].log)}")
        time.sleep(0.5)


def _run(cmd: list[str], log: Path, env: dict[str, str], timeout: float, system: str) -> float:
    t0 = time.monotonic()
    p = _spawn(cmd, log, env)
    p.t0 = t0  # type: ignore[attr-defined]
    _wait([p], t0 + timeout, system)
    return time.monotonic() - t0


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------------------------------
# The shared set-up (platform venv): data, space, test truth
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Setup:
    model: str
    preset: str
    universe: str
    tickers: list[str]
    trials: int
    max_epochs: int
    grace: int
    rf: int
    epoch_windows: int
    metric: str
    timeout: float
    data_config: dict[str, Any]
    space: dict[str, str]  # name -> optuna distribution JSON (the platform's space, as Ray's OptunaSearch converts it)
    defaults: dict[str, Any]  # the preset default (evaluated first by every system)
    nf_fixed: dict[str, Any]  # AutoLSTM arguments fixed by the preset (not searched)
    nf_windows: int  # windows per NF "epoch"
    n_test: int
    val_size: int
    work: str
    home: str
    extra: dict[str, Any] = field(default_factory=dict)


def _data_config(s: Setup):
    from stocktrend.platform.data.dataset import DataConfig
    d = dict(s.data_config)
    d["tickers"], d["fractions"] = tuple(d["tickers"]), tuple(d["fractions"])
    if d.get("market") is not None:
        d["market"] = tuple(d["market"])
    d["indicators"] = tuple(d.get("indicators") or ())
    return DataConfig(**d)


def _panel(s: Setup):
    """The feature panel exactly as ``run_search`` loads it (cached under $STOCKTREND_HOME)."""
    from stocktrend.platform.data.cache import load_or_build_panel
    from stocktrend.platform.data.features import feature_set
    from stocktrend.platform.data.universes import load_universe
    universe = load_universe(None, list(s.tickers) or None, universe=s.universe)
    return load_or_build_panel(universe, feature_set(s.data_config["features"]))


def build_setup(args, work: Path, home: Path) -> tuple[Setup, Any]:
    import numpy as np
    import optuna
    import pandas as pd
    from ray.tune.search.optuna import OptunaSearch

    from stocktrend.models import zoo
    from stocktrend.platform.data.dataset import DataConfig, config_dict, prepare
    from stocktrend.platform.data.splits import chronological_boundaries
    from stocktrend.platform.data.universes import data_defaults
    from stocktrend.tune.space import search_defaults, search_space

    spec = zoo.get(args.model)
    if spec.is_sklearn or spec.task("binary") != "classification":
        raise SystemExit(f"--model {args.model}: this comparison needs a torch classifier of the zoo (lstm, hybrid, "
                         f"dual_tower, ...)")
    space = OptunaSearch.convert_search_space(search_space([spec], args.preset))
    defaults = search_defaults([spec], args.preset)[0]
    d = data_defaults(args.universe)
    tickers = [t for t in args.ticker.split(",") if t]
    dcfg = DataConfig(tickers=tuple(tickers), universe=args.universe, label_kind="binary",
                      features=d["features"], fractions=tuple(d["fractions"]))
    s = Setup(model=args.model, preset=args.preset, universe=args.universe, tickers=tickers, trials=args.trials,
              max_epochs=args.max_epochs, grace=args.grace_period, rf=args.reduction_factor,
              epoch_windows=args.epoch_windows, metric=args.metric, timeout=args.timeout,
              data_config=config_dict(dcfg),
              space={k: optuna.distributions.distribution_to_json(v) for k, v in space.items()},
              defaults=defaults, nf_fixed={}, nf_windows=0, n_test=0, val_size=0, work=str(work), home=str(home))
    panel = _panel(s)
    data = prepare(panel, replace(dcfg, sequence_length=int(defaults["sequence_length"]),
                                  top_k=int(defaults["top_k"])))
    s.nf_windows = args.epoch_windows or int(len(data.samples["train"]))
    # neuralforecast's fixed arguments: what the preset fixes and the space does not search.
    preset = spec.preset(args.preset)
    fixed = {"decoder_hidden_size": int(preset.dense[0]) if getattr(preset, "dense", None) else 32}
    if "layers" not in space and hasattr(preset, "layers"):
        fixed["encoder_n_layers"] = int(preset.layers)
    s.nf_fixed = fixed
    # The NF series: each ticker's panel rows, y = daily log return, ds = the row's position on the ticker's axis
    # (trading days; integer ds avoids a calendar frequency). Its test cutoffs are the platform's test sample days.
    bounds = chronological_boundaries(pd.DatetimeIndex(data.dates), dcfg.fractions)
    frames, truth, n_test, val_sizes = [], [], set(), set()
    test_rows = data.samples["test"]
    for i, t in enumerate(data.tickers):
        a, b = int(data.offsets[i]), int(data.offsets[i + 1])
        dates = pd.DatetimeIndex(data.dates[a:b])
        close = panel.meta["close"].to_numpy(dtype=np.float64)[a:b]
        y = np.diff(np.log(close))
        frames.append(pd.DataFrame({"unique_id": t, "ds": np.arange(1, b - a), "y": y.astype(np.float64),
                                    "date": dates[1:]}))
        rows = test_rows[(test_rows >= a) & (test_rows < b)]
        if len(rows) == 0:
            raise SystemExit(f"ticker {t} has no test samples")
        if rows.max() != b - 1 - HORIZON or np.any(np.diff(rows) != 1):
            raise SystemExit(f"ticker {t}: test rows are not the last labelled days of its series")
        n_test.add(len(rows))
        val_sizes.add(int(dates.searchsorted(bounds.test_start)) - int(dates.searchsorted(bounds.val_start)))
        truth.append(pd.DataFrame({"ticker": t, "date": pd.DatetimeIndex(data.dates[rows]), "pos": rows - a,
                                   "label": data.y[rows], "fwd": data.forward_return[rows]}))
    if len(n_test) != 1 or len(val_sizes) != 1:
        raise SystemExit(f"tickers {tickers} have different test/validation lengths ({n_test}, {val_sizes}): "
                         f"neuralforecast's cross-validation needs one; use tickers that share a calendar")
    s.n_test, s.val_size = n_test.pop(), val_sizes.pop()
    pd.concat(frames, ignore_index=True).to_parquet(work / "nf_series.parquet", index=False)
    pd.concat(truth, ignore_index=True).to_parquet(work / "test_truth.parquet", index=False)
    (work / "setup.json").write_text(json.dumps(asdict(s), indent=1, default=str))
    s.extra["summary"] = (f"{', '.join(data.tickers)}: train {' .. '.join(data.date_range('train'))}, "
                          f"val {' .. '.join(data.date_range('val'))}, test {' .. '.join(data.date_range('test'))} "
                          f"({s.n_test} test windows)")
    return s, panel


def load_setup(work: Path) -> Setup:
    return Setup(**json.loads((work / "setup.json").read_text()))


# ---------------------------------------------------------------------------------------------------------------------
# Test scoring (platform venv)
# ---------------------------------------------------------------------------------------------------------------------
def _scores(label, score, fwd) -> tuple[float, float]:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    label, score, fwd = (np.asarray(v, dtype=np.float64) for v in (label, score, fwd))
    ok = (label >= 0) & np.isfinite(score) & np.isfinite(fwd)
    auc = float(roc_auc_score(label[ok] == 1, score[ok]))
    ic = float(pd.Series(score[ok]).corr(pd.Series(fwd[ok]), method="spearman"))
    return auc, ic


def score_checkpoint(s: Setup, panel, params: dict[str, Any], state: dict) -> tuple[float, float]:
    """P(up) of a trial's weights on the platform's test windows -> (AUC, rank IC)."""
    import numpy as np
    import torch

    from stocktrend.models import zoo
    from stocktrend.platform.data.dataset import prepare
    from stocktrend.platform.training.local import model_config_for
    spec = zoo.get(s.model)
    data = prepare(panel, replace(_data_config(s), sequence_length=int(params["sequence_length"]),
                                  top_k=int(params["top_k"])))
    mcfg = spec.from_params(model_config_for(data, s.preset, spec), params)
    model = spec.build(mcfg)
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    rows = data.samples["test"]
    out = []
    with torch.no_grad():
        for a in range(0, len(rows), 1024):
            x = torch.from_numpy(np.ascontiguousarray(data.windows(rows[a:a + 1024])))
            out.append(torch.softmax(model(x).float(), -1)[:, 1].numpy())
    return _scores(data.y[rows], np.concatenate(out), data.forward_return[rows])


# ---------------------------------------------------------------------------------------------------------------------
# (a) the platform: stocktrend tune
# ---------------------------------------------------------------------------------------------------------------------
def run_platform(s: Setup, panel, seed: int, tag: str) -> dict[str, Any]:
    import pandas as pd
    import torch
    work = Path(s.work) / tag
    name = f"peer-{tag}"
    cmd = [sys.executable, "-m", "stocktrend.tune.search", "--name", name, "--model", s.model, "--preset", s.preset,
           "--universe", s.universe, "--ticker", ",".join(s.tickers), "--label", "binary",  # as dcfg
           "--num-samples", str(s.trials),
           "--max-epochs", str(s.max_epochs), "--grace-period", str(s.grace), "--reduction-factor", str(s.rf),
           "--metric", s.metric, "--max-concurrent", "2", "--cpus-per-worker", "1", "--seed", str(seed),
           "--epoch-windows", str(s.epoch_windows), "--storage", str(work / "tune"),
           "--optuna-storage", f"sqlite:///{work / 'optuna.db'}", "--no-register", "--searcher", "optuna",
           "--scheduler", "asha"]
    wall = _run(cmd, work / "platform.log", _child_env(STOCKTREND_HOME=s.home), s.timeout, "platform (stocktrend tune)")
    table = pd.read_csv(Path(s.home) / "searches" / name / "trials.csv")
    col = f"best_{s.metric}"
    ok = table[table[col].notna()]
    if ok.empty:
        raise SystemFailed(f"platform: no trial reported {s.metric} ({Path(s.home) / 'searches' / name})")
    best = ok.sort_values(col, ascending=s.metric.endswith("loss")).iloc[0]
    ckpt = _tune_best_checkpoint(work / "tune" / name, str(best["trial_id"]), s.metric)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    params = {k: (best[k].item() if hasattr(best[k], "item") else best[k]) for k in s.space}
    auc, ic = score_checkpoint(s, panel, params, state)
    return {"wall": wall, "trials": len(table), "pruned": int(table["stopped_early"].sum()),
            "epochs": int(table["epochs"].sum()), "best_val": float(best[col]), "val_metric": s.metric,
            "test_auc": auc, "rank_ic": ic, "best_config": params, "errors": int((table["status"] == "error").sum())}


def _tune_best_checkpoint(exp: Path, trial_id: str, metric: str) -> Path:
    """The checkpoint of the trial's best epoch: its result.json names each report's checkpoint directory."""
    dirs = [d for d in exp.iterdir() if d.is_dir() and f"_{trial_id}_" in f"{d.name}_"]
    if len(dirs) != 1:
        raise SystemFailed(f"platform: trial {trial_id}: {len(dirs)} trial directories under {exp}")
    rows = [json.loads(ln) for ln in (dirs[0] / "result.json").read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r.get(metric) is not None and r.get("checkpoint_dir_name")]
    best = (min if metric.endswith("loss") else max)(rows, key=lambda r: r[metric])
    path = dirs[0] / best["checkpoint_dir_name"] / "checkpoint.ckpt"
    if not path.is_file():
        raise SystemFailed(f"platform: the best epoch's checkpoint {path} was not kept")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# (b) plain Optuna: create + 2 workers on one SQLite study (optuna venv)
# ---------------------------------------------------------------------------------------------------------------------
def run_optuna(s: Setup, panel, seed: int, tag: str, python: Path) -> dict[str, Any]:
    import torch
    work = Path(s.work) / tag
    work.mkdir(parents=True, exist_ok=True)
    base = [str(python), str(Path(__file__)), "--work", s.work, "--tag", tag, "--seed", str(seed)]
    env = _child_env(STOCKTREND_HOME=s.home, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.monotonic()
    deadline = t0 + s.timeout
    p = _spawn([*base, "--role", "optuna-create"], work / "optuna-create.log", env)
    p.t0 = t0  # type: ignore[attr-defined]
    _wait([p], deadline, "optuna (study creation)")
    workers = []
    for k in range(2):
        w = _spawn([*base, "--role", "optuna-worker", "--worker", str(k)], work / f"optuna-worker{k}.log", env)
        w.t0 = t0  # type: ignore[attr-defined]
        workers.append(w)
    _wait(workers, deadline, "optuna (plain Optuna workers)")
    wall = time.monotonic() - t0
    _run([*base, "--role", "optuna-summary"], work / "optuna-summary.log", env, 300, "optuna (summary)")
    summary = json.loads((work / "optuna_summary.json").read_text())
    trials = [t for t in summary["trials"] if t["number"] < s.trials]
    done = [t for t in trials if t.get("best_val") is not None]
    if not done:
        raise SystemFailed(f"optuna: no trial finished an epoch (log {work})")
    pick = min if s.metric.endswith("loss") else max
    best = pick(done, key=lambda t: t["best_val"])
    state = torch.load(best["checkpoint"], map_location="cpu", weights_only=True)
    auc, ic = score_checkpoint(s, panel, best["params"], state)
    return {"wall": wall, "trials": len(trials), "pruned": sum(t["state"] == "PRUNED" for t in trials),
            "epochs": sum(int(t.get("epochs") or 0) for t in trials), "best_val": float(best["best_val"]),
            "val_metric": s.metric, "test_auc": auc, "rank_ic": ic, "best_config": best["params"],
            "errors": sum(t["state"] == "FAIL" for t in trials),
            "discarded": len(summary["trials"]) - len(trials)}


def _optuna_objects(s: Setup, seed: int, worker: int):
    import optuna
    sampler = optuna.samplers.TPESampler(seed=seed + 1000 * worker)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=s.grace, reduction_factor=s.rf,
                                                    min_early_stopping_rate=0)
    return sampler, pruner


def optuna_role(role: str, work: Path, tag: str, seed: int, worker: int) -> None:
    """Runs in the optuna venv: the study's creation, one worker, or the summary."""
    import optuna
    s = load_setup(work)
    out = work / tag
    storage = f"sqlite:///{out / 'study.db'}"
    name = f"peer-{tag}"
    direction = "minimize" if s.metric.endswith("loss") else "maximize"
    if role == "optuna-create":
        sampler, pruner = _optuna_objects(s, seed, 0)
        study = optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                    pruner=pruner, load_if_exists=False)
        study.enqueue_trial(s.defaults)  # the preset default first, as the platform's OptunaSearch does
        return
    if role == "optuna-summary":
        study = optuna.load_study(study_name=name, storage=storage)
        rows = [{"number": t.number, "state": t.state.name, "params": t.params, **t.user_attrs}
                for t in study.get_trials(deepcopy=False)]
        (out / "optuna_summary.json").write_text(json.dumps({"trials": rows}, indent=1, default=str))
        return
    _optuna_worker(s, out, storage, name, seed, worker)


def _optuna_worker(s: Setup, out: Path, storage: str, name: str, seed: int, worker: int) -> None:
    import logging
    import tempfile

    import lightning.pytorch as pl
    import optuna
    import torch
    from optuna.study import MaxTrialsCallback
    from optuna_integration import PyTorchLightningPruningCallback

    from stocktrend.models import zoo
    from stocktrend.platform.data.dataset import prepare
    from stocktrend.platform.training.local import (TrainConfig, build_trainer, data_module, make_module,
                                                    model_config_for)

    torch.set_num_threads(1)
    for n in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(n).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = zoo.get(s.model)
    dcfg = _data_config(s)
    panel = _panel(s)  # the platform's cached panel (same $STOCKTREND_HOME)
    dists = {k: optuna.distributions.json_to_distribution(v) for k, v in s.space.items()}
    mode = "min" if s.metric.endswith("loss") else "max"

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        params = {}
        for k, d in dists.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                params[k] = trial.suggest_categorical(k, d.choices)
            elif isinstance(d, optuna.distributions.IntDistribution):
                params[k] = trial.suggest_int(k, d.low, d.high, step=d.step, log=d.log)
            else:
                params[k] = trial.suggest_float(k, d.low, d.high, step=d.step, log=d.log)
        return params

    class BestEpoch(pl.Callback):
        """Counts the epochs a trial trains and keeps its best epoch's weights (before the pruner may stop it)."""

        def __init__(self):
            self.epochs, self.best, self.state = 0, None, None

        def on_validation_end(self, trainer, module):
            if trainer.sanity_checking:
                return
            self.epochs += 1
            v = trainer.callback_metrics.get(s.metric)
            if v is None:
                return
            v = float(v)
            if self.best is None or (v < self.best if mode == "min" else v > self.best):
                self.best = v
                self.state = {k: t.detach().cpu().clone() for k, t in module.state_dict().items()}

    def objective(trial: optuna.Trial) -> float:
        if trial.number >= s.trials:  # a race between the two workers' MaxTrialsCallback checks
            trial.study.stop()
            raise optuna.TrialPruned("over the trial budget (discarded)")
        params = suggest(trial)
        data = prepare(panel, replace(dcfg, sequence_length=int(params["sequence_length"]),
                                      top_k=int(params["top_k"]), label_kind=spec.label_for(dcfg.label_kind)))
        mcfg = spec.from_params(model_config_for(data, s.preset, spec), params)
        lr = float(params.get("lr", 2e-4))
        tcfg = TrainConfig(preset=s.preset, model=spec.kind, epochs=s.max_epochs,
                           batch_size=int(params.get("batch_size", 64)), lr=lr, max_lr=lr * 5,
                           weight_decay=float(params.get("weight_decay", 5e-3)), accumulate=1,
                           patience=s.max_epochs, monitor=s.metric, monitor_mode=mode, seed=seed, progress=False,
                           epoch_windows=s.epoch_windows)
        pl.seed_everything(tcfg.seed, workers=True, verbose=False)
        module = make_module(data, tcfg, mcfg)
        keep = BestEpoch()
        prune = PyTorchLightningPruningCallback(trial, monitor=s.metric)
        try:
            with tempfile.TemporaryDirectory(prefix="peer-optuna-") as tmp:
                trainer = build_trainer(tcfg, [keep, prune], Path(tmp), enable_checkpointing=False)
                trainer.fit(module, datamodule=data_module(data, tcfg))
        finally:
            trial.set_user_attr("epochs", keep.epochs)
            trial.set_user_attr("best_val", keep.best)
            if keep.state is not None:
                path = out / f"trial{trial.number:03d}.pt"
                torch.save(keep.state, path)
                trial.set_user_attr("checkpoint", str(path))
        if keep.best is None:
            raise RuntimeError(f"no {s.metric} was logged")
        return keep.best

    sampler, pruner = _optuna_objects(s, seed, worker)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=s.trials, callbacks=[MaxTrialsCallback(s.trials, states=None)],
                   catch=())


# ---------------------------------------------------------------------------------------------------------------------
# (c) neuralforecast AutoLSTM (neuralforecast venv)
# ---------------------------------------------------------------------------------------------------------------------
def run_nf(s: Setup, seed: int, tag: str, python: Path) -> dict[str, Any]:
    import pandas as pd
    work = Path(s.work) / tag
    work.mkdir(parents=True, exist_ok=True)
    env = _child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PEER_T0=repr(time.time()))
    wall_total = _run([str(python), str(Path(__file__)), "--role", "nf", "--work", s.work, "--tag", tag,
                       "--seed", str(seed)], work / "neuralforecast.log", env, s.timeout, "neuralforecast (AutoLSTM)")
    res = json.loads((work / "nf_summary.json").read_text())
    truth = pd.read_parquet(Path(s.work) / "test_truth.parquet")
    pred = pd.read_parquet(work / "nf_pred.parquet")
    f = truth.merge(pred, on=["ticker", "pos"], how="left")
    missing = int(f["score"].isna().sum())
    if missing:
        raise SystemFailed(f"neuralforecast: {missing} of {len(f)} test days have no forecast")
    auc, ic = _scores(f["label"], f["score"], f["fwd"])
    return {"wall": res["search_end"] - res["t0"], "trials": res["trials"], "pruned": res["pruned"],
            "epochs": res["epochs"], "best_val": res["best_val"], "val_metric": "val MAE (log ret)",
            "test_auc": auc, "rank_ic": ic, "best_config": res["best_config"], "errors": res["errors"],
            "refit_s": res["refit_s"], "process_s": wall_total}


def _nf_space(trial, dists: dict, windows: int, max_epochs: int) -> dict[str, Any]:
    """Ray OptunaSearch define-by-run space: the searched parameters, plus the steps that make one validation (one
    ASHA iteration) about ``windows`` training windows."""
    import optuna
    for k, d in dists.items():
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            v = trial.suggest_categorical(k, d.choices)
        elif isinstance(d, optuna.distributions.IntDistribution):
            v = trial.suggest_int(k, d.low, d.high, step=d.step, log=d.log)
        else:
            v = trial.suggest_float(k, d.low, d.high, step=d.step, log=d.log)
        if k == "windows_batch_size":
            steps = max(1, math.ceil(windows / int(v)))
    return {"val_check_steps": steps, "max_steps": steps * max_epochs}


def nf_role(work: Path, tag: str, seed: int) -> None:
    """Runs in the neuralforecast venv: AutoLSTM's search, its refit, its test forecasts."""
    import functools
    import logging
    import shutil
    import tempfile

    import optuna
    import pandas as pd
    import ray
    from neuralforecast import NeuralForecast
    from neuralforecast.auto import AutoLSTM
    from neuralforecast.common import _base_auto
    from neuralforecast.common._base_auto import RayOptions
    from neuralforecast.losses.pytorch import MAE
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    t0 = float(os.environ.get("PEER_T0") or time.time())
    s = load_setup(work)
    out = work / tag
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    series = pd.read_parquet(work / "nf_series.parquet")
    df = series[["unique_id", "ds", "y"]]
    dists = {NF_NAMES[k]: optuna.distributions.json_to_distribution(v) for k, v in s.space.items() if k in NF_NAMES}
    if "windows_batch_size" not in dists:
        raise SystemExit("the space has no batch_size: cannot size neuralforecast's epochs")
    first = {NF_NAMES[k]: v for k, v in s.defaults.items() if k in NF_NAMES}
    searcher = OptunaSearch(space=functools.partial(_nf_space, dists=dists, windows=s.nf_windows,
                                                    max_epochs=s.max_epochs),
                            metric="loss", mode="min", sampler=optuna.samplers.TPESampler(seed=seed),
                            points_to_evaluate=[first])
    config = {**s.nf_fixed, "random_seed": seed, "scaler_type": "robust", "accelerator": "cpu", "devices": 1,
              "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
              "num_sanity_val_steps": 0}
    timing: dict[str, float] = {}
    original = _base_auto.BaseAuto._tune_model

    def timed(self, *a, **k):  # the search's end, to separate it from the refit and the test forecasts
        try:
            return original(self, *a, **k)
        finally:
            timing["search_end"] = time.time()

    _base_auto.BaseAuto._tune_model = timed
    tmp = tempfile.mkdtemp(prefix="pr", dir="/tmp")  # short: Ray's socket paths must stay under 107 characters
    try:
        ray.init(address="local", _temp_dir=tmp, num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=300 * 1024 ** 2)
        auto = AutoLSTM(h=HORIZON, loss=MAE(), config=config, search_alg=ConcurrencyLimiter(searcher, 2),
                        num_samples=s.trials, backend="ray",
                        ray_options=RayOptions(scheduler=ASHAScheduler(max_t=s.max_epochs, grace_period=s.grace,
                                                                       reduction_factor=s.rf),
                                               cpus=1, gpus=0,
                                               run_config=tune.RunConfig(name=f"peer-{tag}",
                                                                         storage_path=str(out / "ray"), verbose=0)))
        nf = NeuralForecast(models=[auto], freq=1)
        cv = nf.cross_validation(df=df, n_windows=s.n_test, step_size=1, val_size=s.val_size, refit=False)
        t_end = time.time()
        grid = nf.models[0].results
        trials, epochs, best_val, pruned, errors = 0, 0, None, 0, 0
        for r in grid:
            trials += 1
            errors += int(r.error is not None)
            m = r.metrics_dataframe
            if m is None or not len(m) or "loss" not in m:
                continue
            n = int(m["training_iteration"].max())
            epochs += n
            pruned += int(n < s.max_epochs)
            v = float(m["loss"].min())
            best_val = v if best_val is None else min(best_val, v)
        best = grid.get_best_result(metric="loss", mode="min", scope="all").config
        col = [c for c in cv.columns if c not in ("unique_id", "ds", "cutoff", "y")][0]
        pred = (cv.groupby(["unique_id", "cutoff"])[col].sum().reset_index()
                .rename(columns={"unique_id": "ticker", "cutoff": "pos", col: "score"}))
        pred.to_parquet(out / "nf_pred.parquet", index=False)
        keep = {k: v for k, v in best.items() if k in (*NF_NAMES.values(), "val_check_steps", "max_steps")}
        (out / "nf_summary.json").write_text(json.dumps({
            "t0": t0, "search_end": timing["search_end"], "refit_s": t_end - timing["search_end"],
            "trials": trials, "epochs": epochs, "pruned": pruned, "errors": errors, "best_val": best_val,
            "best_config": keep}, indent=1, default=str))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------------
LABEL = {"platform": "(a) stocktrend tune", "optuna": "(b) plain Optuna", "neuralforecast": "(c) NF AutoLSTM"}


def _fmt(v: Any, f: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, f)


def print_table(rows: list[dict[str, Any]], systems: list[str]) -> None:
    head = (f"{'system':<21} {'seed':>4} {'wall s':>7} {'x platform':>10} {'trials':>6} {'pruned':>6} "
            f"{'trial-ep':>8} {'trial-ep/h':>10} {'best val':>9} {'val metric':<18} {'test AUC':>8} {'rank IC':>8}")
    print(head)
    print("-" * len(head))
    plat = {r["seed"]: r["wall"] for r in rows if r["system"] == "platform" and r.get("ok")}

    def line(name, seed, r, ratio):
        eph = r["epochs"] / (r["wall"] / 3600) if r.get("wall") else None
        return (f"{name:<21} {seed:>4} {_fmt(r.get('wall'), '7.0f')} {_fmt(ratio, '10.2f')} "
                f"{_fmt(r.get('trials'), '6d')} {_fmt(r.get('pruned'), '6d')} {_fmt(r.get('epochs'), '8d')} "
                f"{_fmt(eph, '10.0f')} {_fmt(r.get('best_val'), '9.4f')} {r.get('val_metric', ''):<18} "
                f"{_fmt(r.get('test_auc'), '8.4f')} {_fmt(r.get('rank_ic'), '8.4f')}")

    for r in rows:
        if not r.get("ok"):
            print(f"{LABEL[r['system']]:<21} {r['seed']:>4}   FAILED: {r['error'].splitlines()[0][:120]}")
            continue
        ratio = r["wall"] / plat[r["seed"]] if r["seed"] in plat else None
        print(line(LABEL[r["system"]], f"{r['seed']}{'*' if r.get('attempts', 1) > 1 else ''}", r, ratio))
    print("-" * len(head))
    for sys_ in systems:
        ok = [r for r in rows if r["system"] == sys_ and r.get("ok")]
        if not ok:
            continue
        med = {k: statistics.median([r[k] for r in ok if r.get(k) is not None] or [float("nan")])
               for k in ("wall", "epochs", "best_val", "test_auc", "rank_ic", "trials", "pruned")}
        med["epochs_h"] = statistics.median([r["epochs"] / (r["wall"] / 3600) for r in ok])
        med["val_metric"] = ok[0]["val_metric"]
        ratios = [r["wall"] / plat[r["seed"]] for r in ok if r["seed"] in plat]
        ratio = statistics.median(ratios) if ratios else None
        print(f"{LABEL[sys_]:<21} {'med':>4} {_fmt(med['wall'], '7.0f')} {_fmt(ratio, '10.2f')} "
              f"{_fmt(float(med['trials']), '6.0f')} {_fmt(float(med['pruned']), '6.1f')} "
              f"{_fmt(float(med['epochs']), '8.1f')} {_fmt(med['epochs_h'], '10.0f')} "
              f"{_fmt(med['best_val'], '9.4f')} {med['val_metric']:<18} {_fmt(med['test_auc'], '8.4f')} "
              f"{_fmt(med['rank_ic'], '8.4f')}")


# A Ray instance killed from outside (another user's `ray stop --force` stops every Ray process on the machine): the
# run is repeated once, and the table says so.
RAY_KILLED = ("GCS has been unavailable", "Failed to connect to GCS", "Raylet is terminated", "node has crashed",
              "terminated by `ray stop`", "ActorDiedError", "RaySystemError")


def _attempt(system: str, s: Setup, panel, seed: int, tag: str, pythons: dict[str, Path]) -> dict[str, Any]:
    for attempt in (1, 2):
        try:
            if system == "platform":
                r = run_platform(s, panel, seed, f"{tag}-{attempt}" if attempt > 1 else tag)
            elif system == "optuna":
                r = run_optuna(s, panel, seed, tag, pythons["optuna"])
            else:
                r = run_nf(s, seed, f"{tag}-{attempt}" if attempt > 1 else tag, pythons["neuralforecast"])
            r["attempts"] = attempt
            return r
        except SystemFailed as exc:
            if attempt == 2 or system == "optuna" or not any(m in str(exc) for m in RAY_KILLED):
                raise
            print(f"[{LABEL[system]}] seed {seed}: its Ray instance was killed from outside ({exc.args[0][:160]}"
                  f"...); running it once more", file=sys.stderr, flush=True)
    raise AssertionError("unreachable")


def _dist_str(js: str) -> str:
    import optuna
    d = optuna.distributions.json_to_distribution(js)
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return f"in {list(d.choices)}"
    kind = "int" if isinstance(d, optuna.distributions.IntDistribution) else "float"
    return f"{kind} [{d.low:g}, {d.high:g}]{' log' if d.log else ''}"


def _term(signum, frame):
    raise KeyboardInterrupt


def versions(python: Path | None, names: list[str]) -> dict[str, str]:
    sys.path.insert(0, str(HERE))
    import _venv
    return _venv.versions(Path(sys.executable) if python is None else python, names)


# ---------------------------------------------------------------------------------------------------------------------
def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke: tiny preset, 4 trials x 2 epochs (grace 1), 512 windows per epoch, seed 1, "
                         "platform + optuna unless --peers says otherwise")
    ap.add_argument("--peers", default=None, help="comma-separated systems: platform, optuna, neuralforecast "
                    "(default: all three; --quick: platform,optuna)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 1,2,3; --quick: 1)")
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--preset", default=None, help="search space / model preset (default small; --quick: tiny)")
    ap.add_argument("--universe", default="msft")
    ap.add_argument("--ticker", default="MSFT", help="comma-separated tickers of the universe (one calendar)")
    ap.add_argument("--trials", type=int, default=None, help="trials per search (default 12; --quick: 4)")
    ap.add_argument("--max-epochs", type=int, default=None, help="ASHA max_t = the Trainer's max_epochs (default "
                    "12, the platform's; --quick: 2)")
    ap.add_argument("--grace-period", type=int, default=None, help="ASHA grace = SH min_resource (default 2; "
                    "--quick: 1)")
    ap.add_argument("--reduction-factor", type=int, default=2)
    ap.add_argument("--epoch-windows", type=int, default=None, help="training windows per epoch (default 0 = all, "
                    "the platform's default; --quick: 512)")
    ap.add_argument("--metric", default="val_loss", choices=["val_loss", "val_auc"])
    ap.add_argument("--timeout", type=float, default=None, help="seconds per system and seed (default 3600; "
                    "--quick: 600)")
    ap.add_argument("--work", default=None, help="work directory (default bench/peers/.work/search/<time>)")
    ap.add_argument("--setup", action="store_true", help="only create the peers' virtual environments this run "
                    "would use (CI does it in its install step), then exit")
    # internal: the children's roles
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tag", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    q = a.quick
    a.peers = a.peers or ("platform,optuna" if q else ",".join(SYSTEMS))
    a.seeds = a.seeds or ("1" if q else "1,2,3")
    a.preset = a.preset or ("tiny" if q else "small")
    a.trials = a.trials or (4 if q else 12)
    a.max_epochs = a.max_epochs or (2 if q else 12)
    a.grace_period = a.grace_period or (1 if q else 2)
    a.epoch_windows = a.epoch_windows if a.epoch_windows is not None else (512 if q else 0)
    a.timeout = a.timeout or (600 if q else 3600)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.role:
        work = Path(a.work)
        if a.role.startswith("optuna-"):
            optuna_role(a.role, work, a.tag, a.seed, a.worker)
        elif a.role == "nf":
            nf_role(work, a.tag, a.seed)
        else:
            raise SystemExit(f"unknown role {a.role}")
        return 0

    signal.signal(signal.SIGTERM, _term)  # `timeout` / a scheduler's SIGTERM: kill the children's groups too
    systems = [p.strip() for p in a.peers.split(",") if p.strip()]
    unknown = [p for p in systems if p not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    systems = [p for p in SYSTEMS if p in systems]
    if a.setup:
        sys.path.insert(0, str(HERE))
        import _venv
        for name, packages in (("optuna", OPTUNA_PACKAGES), ("neuralforecast", NF_PACKAGES)):
            if name in systems:
                print(f"[{name}] {_venv.ensure(name, packages)}")
        return 0
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    base = HERE / ".work" / "search"
    work = Path(a.work).resolve() if a.work else base / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    home = base / "home"  # the platform's STOCKTREND_HOME here: feature cache shared by every run
    os.environ["STOCKTREND_HOME"] = str(home)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import logging
    logging.basicConfig(level=logging.WARNING)
    t_start = time.perf_counter()

    sys.path.insert(0, str(HERE))
    import _venv
    pythons: dict[str, Path] = {}
    try:
        if "optuna" in systems:
            pythons["optuna"] = _venv.ensure("optuna", OPTUNA_PACKAGES)
        if "neuralforecast" in systems:
            pythons["neuralforecast"] = _venv.ensure("neuralforecast", NF_PACKAGES)
    except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
        print(f"error: creating a peer venv failed: {exc}", file=sys.stderr)
        return 1

    s, panel = build_setup(a, work, home)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"search: {s.model} / {s.preset}, {s.trials} trials, max {s.max_epochs} epochs, successive halving grace "
          f"{s.grace} / reduction {s.rf}, {s.epoch_windows or 'all'} windows per epoch, 2 trials x 1 CPU at a time, "
          f"metric {s.metric}; seeds {seeds}")
    print(f"data: {s.extra['summary']}")
    print(f"space: {', '.join(f'{k} {_dist_str(v)}' for k, v in s.space.items())}; first trial: {s.defaults}")
    print(f"neuralforecast: target daily log return, h={HORIZON} (5-day return = sum), fixed {s.nf_fixed}, "
          f"~{s.nf_windows} windows per validation, val_size {s.val_size}, {s.n_test} test cutoffs")
    print(f"work: {work}", flush=True)

    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    interrupted = False
    try:
        for seed in seeds:
            for system in systems:
                tag = f"{system[:3]}-s{seed}-{int(time.time())}"
                t0 = time.perf_counter()
                print(f"[{LABEL[system]}] seed {seed} ...", flush=True)
                try:
                    r = _attempt(system, s, panel, seed, tag, pythons)
                    r.update(system=system, seed=seed, ok=True)
                    extra = f", refit + test forecasts {r['refit_s']:.0f} s" if "refit_s" in r else ""
                    if r.get("discarded"):
                        extra += f", {r['discarded']} trial(s) over the budget discarded (two workers raced)"
                    if r.get("errors"):
                        extra += f", {r['errors']} trial(s) failed"
                    print(f"[{LABEL[system]}] seed {seed}: wall {r['wall']:.0f} s, {r['trials']} trials "
                          f"({r['pruned']} stopped early), {r['epochs']} trial-epochs, best val {r['best_val']:.4f}, "
                          f"test AUC {r['test_auc']:.4f}, rank IC {r['rank_ic']:.4f}{extra}; best {r['best_config']}",
                          flush=True)
                except (SystemFailed, OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
                    msg = str(exc) if isinstance(exc, SystemFailed) else f"{system}: {type(exc).__name__}: {exc}"
                    print(f"[{LABEL[system]}] seed {seed} FAILED after {time.perf_counter() - t0:.0f} s: {msg}",
                          file=sys.stderr, flush=True)
                    failures.append(f"{LABEL[system]} seed {seed}")
                    r = {"system": system, "seed": seed, "ok": False, "error": msg}
                rows.append(r)
    except KeyboardInterrupt:
        interrupted = True
        _kill_all()
        print("\ninterrupted: every child process group was killed", file=sys.stderr)

    print(f"\n== search: {s.model}/{s.preset}, {s.trials} trials, max {s.max_epochs} epochs, SH grace {s.grace} rf "
          f"{s.rf}, 2 x 1 CPU; {s.extra['summary']} ==")
    print_table(rows, systems)
    if any(r.get("attempts", 1) > 1 for r in rows):
        print("* second attempt: the first one's Ray instance was killed from outside the run")
    print("test: (a)/(b) the best trial's best-epoch checkpoint on the test windows (no refit); (c) "
          "neuralforecast's refit of its best config. rank IC: Spearman(score, realised 5-day return), pooled.")
    ver = versions(None, ["ray", "optuna", "optuna-integration", "torch", "lightning"])
    print(f"versions: platform venv {ver}")
    for name, names in (("optuna", ["optuna", "optuna-integration", "torch", "lightning"]),
                        ("neuralforecast", ["neuralforecast", "ray", "optuna", "torch", "pytorch-lightning",
                                            "lightning"])):
        if name in pythons:
            print(f"versions: {name} venv {versions(pythons[name], names)}")
    print(f"total {time.perf_counter() - t_start:.0f} s; logs and artefacts under {work}")
    if interrupted:
        return 130
    if failures:
        print(f"error: failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        _kill_all()
        sys.exit(130)
