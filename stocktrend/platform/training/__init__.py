"""Fitting models: the local Lightning fit, the Ray Train path around the same code, train jobs (fit -> register).
May import platform.data, platform.registry, platform.console and stocktrend.models; never evaluation, tune or serve."""
