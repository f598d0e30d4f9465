"""Fitting models: the local Lightning fit, the Ray Train path around the same code, train jobs (fit -> register).
May import platform.data, platform.registry, platform.console and stocktrend.models; never evaluation, tune or serve."""

# The weights' moving average the torch models validate, keep and register (TrainConfig.average_halflife, in epochs;
# 0 = the raw weights): here, light, so that the command line's default is this one without importing Lightning.
AVERAGE_HALFLIFE = 0.0
