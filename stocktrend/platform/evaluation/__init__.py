"""Judging models: metrics + baselines + backtest, the Markdown report, the leakage audit.
May import platform.data, platform.registry, platform.training (walk-forward retrains) and stocktrend.models."""
