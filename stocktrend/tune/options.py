"""What a search is asked to do: ``SearchOptions`` (the CLI's flags, ``run_search``'s argument)."""

from __future__ import annotations

from dataclasses import dataclass

from stocktrend.models import zoo
from stocktrend.models.spec import ModelSpec


@dataclass(frozen=True)
class SearchOptions:
    name: str = "search"
    preset: str = "small"  # search space and model preset (stocktrend.tune.space)
    model: str = zoo.DEFAULT_KIND  # model kind, or several comma-separated (then the model is a search dimension)
    num_samples: int = 8
    max_epochs: int = 12  # ASHA max_t
    grace_period: int = 2  # ASHA: epochs before a trial can be stopped
    epoch_windows: int = 0  # > 0: training windows per trial epoch (a fresh random draw each epoch); 0 = all
    reduction_factor: int = 2
    metric: str = "val_loss"  # or val_rank_ic (panels: the daily rank IC), val_auc, ...
    max_concurrent: int = 0  # 0 = as many 1-worker trials as the cluster has CPUs for
    workers_per_trial: int = 1  # 1: train inside the trial's process; > 1: Ray Train (DDP) inside the trial
    cpus_per_worker: float = 1.0  # also the torch threads of an in-process trial
    gpus_per_worker: float = 0.0
    seed: int = 42
    tickers: tuple[str, ...] = ()
    data_dir: str | None = None
    universe: str = "msft"  # named embedded universe (ignored with data_dir)
    label_kind: str = "auto"  # auto (excess on a panel of 3+ tickers, else binary) | binary | ternary | excess
    features: str | None = None  # feature set; None = the universe's own (standard, or short for sp500_2010)
    ticker_id: bool = False  # the ticker's identity as a one-hot input
    storage: str | None = None  # Tune + Train storage (local dir or URI); default $STOCKTREND_HOME/tune
    optuna_storage: str | None = None  # default sqlite:///$STOCKTREND_HOME/optuna.db
    model_name: str = "stocktrend"
    promote: bool = False  # offer the best version to production through the gate (stocktrend tune only)
    kept_exit_code: int = 3  # --promote: the exit code when production is kept
    register: bool = True
    address: str | None = None
    extra_points: tuple[dict, ...] = ()  # evaluated after the preset default (tests plant a poor config here)
    searcher: str = "optuna"  # optuna (TPE) | random (Tune's random sampling, for comparisons)
    scheduler: str = "asha"  # asha | fifo (every trial runs max_epochs)
    nested_train: bool = False  # force Ray Train inside 1-worker trials too (the pre-issue-11 path; for benchmarks)
    start_timeout_s: float = 30.0  # Ray Train worker-group start bound inside a trial (nested path)
    max_failures: int = 0  # Tune restarts of a failed trial from its last checkpoint (a lost node, a killed process)
    verbose: bool = False  # Ray's trial table and logs on the console
    # how trials get the features: object-store (the panel in memory, shipped once), stream (a partitioned dataset:
    # each trial fits its plan and reads one ticker at a time), auto (stream when the panel would not fit; data.transport)
    data_transport: str = "auto"

    @property
    def models(self) -> list[str]:
        return [m.strip() for m in self.model.split(",") if m.strip()]

    @property
    def specs(self) -> list[ModelSpec]:
        """The searched models' specs (an unknown name lists the zoo)."""
        return [zoo.get(m) for m in self.models]

    @property
    def mode(self) -> str:
        from stocktrend.platform.training.local import mode_of
        return mode_of(self.metric)

    @property
    def in_process(self) -> bool:
        return self.workers_per_trial <= 1 and not self.nested_train

    def trial_resources(self) -> dict[str, float]:
        """What Tune reserves for one trial: its worker's CPUs/GPUs when it trains in process; 1 CPU for the trial
        driver when Ray Train workers (which reserve their own) do the training."""
        if self.in_process:
            return {"cpu": self.cpus_per_worker, "gpu": self.gpus_per_worker}
        return {"cpu": 1.0}

    def with_label(self, data_config=None) -> "SearchOptions":
        """These options with ``--label auto`` made concrete: the given data config's label, else ``excess`` on a
        panel of 3+ tickers (asked for, in ``data_dir``, or the universe's) and ``binary`` otherwise; an explicit
        label is kept. Resolved before anything reads it: trial tables, checkpoints and tags hold the concrete one."""
        from dataclasses import replace

        from stocktrend.platform.data.universes import AUTO_LABEL, default_label
        if self.label_kind != AUTO_LABEL:
            return self
        return replace(self, label_kind=data_config.label_kind if data_config is not None else
                       default_label(None if self.data_dir else self.universe, self.data_dir, self.tickers))

    def cpus_per_trial(self) -> float:
        return self.cpus_per_worker if self.in_process else 1 + self.workers_per_trial * self.cpus_per_worker
