"""The seeds' protocol, reproduced on purpose so its leak can be measured next to the honest pipeline.

Seeds: scaler and feature selection fitted on all rows, RandomOverSampler applied to all windows, then a *random*
80/10/10 split of windows. Adjacent windows share L - 1 input days and H - 1 label days, and oversampled duplicates
land on both sides of the split, so test windows have near-copies with nearly the same label in training.
Never use this for model selection; it exists for ``stocktrend evaluate --leakage-audit`` and the leakage tests.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stocktrend.platform.data.dataset import PreparedData, fit_transforms
from stocktrend.platform.data.labels import LabelKind


def seeds_protocol(data: PreparedData, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 42,
                   with_names: bool = False):
    """Windows and labels per segment under the seeds' (leaky) protocol, built from the same cached features. With
    ``with_names`` also the input columns' names, in order (its own feature selection orders them differently from
    the honest data set's)."""
    from imblearn.over_sampling import RandomOverSampler
    kind = data.kind
    if kind.is_value:
        raise ValueError("the seeds' protocol is defined for classification labels")
    panel = data.panel
    values = panel.values
    # Every labelled window of the panel, not just the ones the honest split keeps (the seeds had no purge).
    L = data.seq_len
    all_rows = []
    for a, b in zip(data.offsets[:-1], data.offsets[1:]):
        r = np.arange(a + L - 1, b)
        all_rows.append(r[data.y[r] >= 0])
    rows = np.concatenate(all_rows)
    tf = fit_transforms(values, panel.feature_names, [(0, len(values))], rows, data.y[rows], kind,
                        data.config.top_k)  # fitted on everything: the first leak
    tf.tickers = list(data.transforms.tickers)  # the same inputs as the honest model (ticker identity included)
    x = tf.transform(values, panel.meta["ticker"].astype(str).to_numpy() if tf.tickers else None)
    view = sliding_window_view(x, L, axis=0).transpose(0, 2, 1)
    res_rows, _ = RandomOverSampler(random_state=seed).fit_resample(rows.reshape(-1, 1), data.y[rows])
    res_rows = res_rows.ravel()  # oversampled before splitting: the second leak
    perm = np.random.default_rng(seed).permutation(len(res_rows))  # random split of windows: the third leak
    n_tr = int(len(perm) * fractions[0])
    n_va = int(len(perm) * fractions[1])
    parts = {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}
    segments = {seg: (view[res_rows[p] - L + 1], data.y[res_rows[p]]) for seg, p in parts.items()}
    return (segments, list(tf.input_names)) if with_names else segments
