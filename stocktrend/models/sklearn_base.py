"""What the scikit-learn models (``rf``, ``gbm``) share: flattened windows in, class probabilities out, and a
pickle-free file format.

A fitted estimator is stored with skops (a zip of JSON + numpy arrays, no pickle) and loaded with an allow-list of
types: what skops trusts by default (numpy, builtins, scikit-learn's estimators and their internals) plus the two tree
types below. A crafted file that names any other type, or a pickle put in its place, is refused before anything runs.
"""

from __future__ import annotations

import numpy as np

# Types a stored rf / gbm may contain beyond what skops trusts by default (numpy arrays, scikit-learn estimators).
TRUSTED_TYPES = ["sklearn.tree._tree.Tree", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


class UnsafeModelFile(ValueError):
    """A stored scikit-learn model is not a skops file, or names a type outside the allow-list."""


def flatten(windows: np.ndarray) -> np.ndarray:
    """(batch, days, features) -> (batch, days * features): the model sees every day of the window."""
    w = np.asarray(windows, dtype=np.float32)
    return w.reshape(len(w), -1)


def dumps(estimator) -> bytes:
    import skops.io as sio
    return sio.dumps(estimator)


def loads(data: bytes):
    import zipfile

    import skops.io as sio
    try:
        untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
    except (zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise UnsafeModelFile(f"not a skops model file ({type(exc).__name__}: {exc}); pickles are refused") from None
    if untrusted:
        raise UnsafeModelFile(f"refused: the model file names types outside the allow-list: {', '.join(untrusted[:5])}")
    try:
        return sio.loads(data, trusted=TRUSTED_TYPES)
    except Exception as exc:  # a malformed (not malicious: its types were checked) file: one clear error
        raise UnsafeModelFile(f"unreadable skops model file ({type(exc).__name__}: {exc})") from None


class SklearnNet:
    """The estimator behind the same ``outputs(x)`` call as the torch models (numpy in, numpy out)."""

    def __init__(self, estimator):
        self.estimator = estimator

    def outputs(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        return {"probs": self.estimator.predict_proba(flatten(windows))}
