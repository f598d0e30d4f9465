"""Inference backends agree with torch fp32 on real test windows within their stated bounds, and a backend that
cannot be built falls back to torch fp32 with the reason (no Ray needed)."""

import numpy as np
import pytest

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.synthetic import planted_signal_universe
from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint, save_checkpoint
from stocktrend.platform.training.local import TrainConfig, fit
from stocktrend.platform.registry import inference as backends
from stocktrend.platform.registry.inference import BACKENDS, BOUNDS, ServedModel


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    data = build_dataset(DataConfig(tickers=(), top_k=16, sequence_length=20),
                         universe=planted_signal_universe(1200, noise=0.001, seed=3), use_cache=False)
    fitted = fit(data, TrainConfig(preset="tiny", epochs=2, batch_size=64, accumulate=1, progress=False))
    path = save_checkpoint(make_checkpoint(fitted.module.model, fitted.model_config, data, fitted.test_metrics),
                           tmp_path_factory.mktemp("ckpt") / "m.pt")
    return Predictor.load(path), data.windows(data.samples["test"])


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_agrees_with_fp32_on_test_windows(model, name):
    pred, x = model
    served = ServedModel(pred, name, threads=1)
    assert served.backend == name, served.fallback  # built, not fallen back
    ref, ref_att = pred.predict_proba(x, return_attention=True)
    got, att = served.predict_proba(x, 64, True)  # several chunks: the dynamic batch axis
    diff = float(np.abs(got - ref).max())
    assert got.shape == ref.shape and att.shape == ref_att.shape
    assert diff <= BOUNDS[name], f"{name}: max |p - p_fp32| {diff:.2e} > {BOUNDS[name]:.0e}"
    assert served.describe_backend()["backend"] == name
    if name == "onnx-int8":  # 8-bit weights, or 7-bit where 8-bit ones saturate (CPUs without VNNI)
        assert served.describe_backend()["int8_weight_bits"] in (7, 8)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-3)


def test_failed_export_falls_back_to_torch_and_says_why(model, monkeypatch):
    pred, x = model

    def broken(*_a, **_k):
        raise RuntimeError("exporter broke")
    monkeypatch.setattr(backends, "export_onnx", broken)
    served = ServedModel(pred, "onnx")
    assert served.backend == "torch" and "exporter broke" in served.fallback
    np.testing.assert_array_equal(served.predict_proba(x[:3])[0], pred.predict_proba(x[:3])[0])


def test_bad_windows_and_unknown_backend_are_clear_errors(model):
    from stocktrend.platform.data.sources import DataValidationError
    pred, x = model
    with pytest.raises(ValueError, match="unknown backend"):
        ServedModel(pred, "tensorrt")
    served = ServedModel(pred, "onnx")
    bad = x[:2].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataValidationError, match="NaN"):
        served.predict_proba(bad)
    with pytest.raises(DataValidationError, match="shape"):
        served.predict_proba(x[:2, :5])


def test_int8_quantises_again_with_7_bit_weights_then_falls_back(model, monkeypatch):
    """8-bit weights that miss the bound (as on CPUs without VNNI) are quantised again with 7-bit ones; if those miss
    it too, torch fp32 serves and says why (and no weight width is reported)."""
    pred, x = model
    diffs, built = [], []
    build = ServedModel._build

    def spy(self, backend, reduce_range=False):
        built.append(reduce_range)
        return build(self, backend, reduce_range=reduce_range)
    monkeypatch.setattr(ServedModel, "_build", spy)
    monkeypatch.setattr(ServedModel, "_probe_diff", lambda self: diffs.pop(0))
    diffs[:] = [0.05, 0.005]
    served = ServedModel(pred, "onnx-int8")
    assert built == [False, True] and served.backend == "onnx-int8"
    assert served.describe_backend()["int8_weight_bits"] == 7 and served.max_abs_diff == 0.005
    from stocktrend.serve.schemas import ModelInfo
    assert set(served.describe_backend()) <= set(ModelInfo.model_fields)  # /model drops no key of it
    assert served.predict_proba(x[:4])[0].shape == pred.predict_proba(x[:4])[0].shape
    diffs[:], built[:] = [0.05, 0.05], []
    served = ServedModel(pred, "onnx-int8")
    assert built == [False, True] and served.backend == "torch" and "int8_weight_bits" not in served.describe_backend()
    assert "exceeds the onnx-int8 bound" in served.fallback
