"""Prices in, windows out: sources + validation, causal features, labels, chronological splits, the feature cache,
fit-on-train transforms + windows, the DataModule, synthetic data. Imports no other room and no model."""
