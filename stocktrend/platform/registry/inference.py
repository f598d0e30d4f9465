"""Inference backends for a loaded model, used by the endpoint's replicas (stocktrend/serve) and by batch scoring
(stocktrend/loop/score.py), the one inference layer behind both: torch fp32, torch bf16 (autocast), ONNX Runtime fp32
and ONNX Runtime dynamic INT8, behind one ``predict_proba`` (scikit-learn models, rf and gbm, always run in scikit-learn).

The ONNX graph is exported from the loaded checkpoint when the replica loads it (0.3-0.4 s for the presets here; the
legacy TorchScript exporter, so no onnxscript is needed) with a dynamic batch axis, and kept in memory. Every backend is
checked against torch fp32 on the same probe windows when it loads; a backend that cannot be built or disagrees by more
than its bound falls back to torch fp32, and the reason is logged and shown by ``/model``. An ONNX file is a protobuf
graph, not a pickle: loading it runs no Python code.
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("stocktrend.inference")

from stocktrend.platform.registry import BACKENDS  # noqa: E402  (one list for the CLI, the app and this module)
DEFAULT_BACKEND = "onnx"
# Largest allowed |p_backend - p_fp32| on the probe windows: probabilities and confidences as they are, predicted
# returns divided by their standard deviation over the probe windows (at least 0.01).
BOUNDS = {"torch": 0.0, "onnx": 1e-4, "torch-bf16": 2e-2, "onnx-int8": 2e-2}
PROBE_WINDOWS = 64


class _Raw(torch.nn.Module):
    """The network's raw outputs as a tuple in a fixed order (ONNX graphs have positional outputs); softmax and
    calibration stay in ``Predictor.post``, shared by every backend."""

    def __init__(self, model: torch.nn.Module, keys: list[str]):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.outputs(x)
        return tuple(out[k].float() for k in self.keys)


def export_onnx(pred, path: Path) -> list[str]:
    """Write the predictor's network as ONNX (opset 18, dynamic batch axis) to ``path``; returns the output names."""
    example = torch.zeros(2, pred.seq_len, pred.n_features)
    keys = list(pred.raw_outputs(example.numpy()))
    wrapper = _Raw(pred.model, keys).eval()
    # The trace must not take nn.TransformerEncoderLayer's inference fast path (a fused op ONNX does not have): it is
    # skipped when grad is enabled and the fast path is switched off for the export.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings; failures still raise
            torch.onnx.export(wrapper, (example,), str(path), input_names=["windows"], output_names=keys,
                              opset_version=18, dynamo=False, verbose=False,
                              dynamic_axes={"windows": {0: "batch"}, **{k: {0: "batch"} for k in keys}})
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return keys


class ServedModel:
    """A loaded Predictor behind one backend. Everything but ``predict_proba`` (describe, class names, shapes, the
    feature path of /predict/ticker) is the Predictor's own."""

    def __init__(self, pred, backend: str = DEFAULT_BACKEND, threads: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.pred, self.requested, self.threads = pred, backend, max(1, int(threads))
        self.backend, self.fallback, self.max_abs_diff = "torch", None, 0.0
        self.reduce_range = False  # onnx-int8 with 7-bit weights (where 8-bit ones saturate, see __init__)
        self._session, self._keys = None, []
        if pred.spec.is_sklearn:
            # Trees run in scikit-learn whatever was asked (no ONNX converter is installed for them).
            self.backend = "sklearn"
            if backend != "torch":
                self.fallback = f"{backend} does not apply to a {pred.model_kind} model: served by scikit-learn"
        elif backend != "torch":
            t0 = time.perf_counter()
            try:
                self._build(backend)
                self.backend = backend
                diff = self._probe_diff()
                if diff > BOUNDS[backend] and backend == "onnx-int8":
                    # 8-bit activations times 8-bit weights saturate the 16-bit accumulators of CPUs without VNNI
                    # (AVX2, AVX-512 without VNNI): ONNX Runtime's remedy is 7-bit weights (reduce_range).
                    log.info("onnx-int8: max |p - p_fp32| %.2e with 8-bit weights; trying 7-bit (reduce_range)", diff)
                    self._build(backend, reduce_range=True)
                    diff, self.reduce_range = self._probe_diff(), True
                if diff > BOUNDS[backend]:
                    raise RuntimeError(f"max |p - p_fp32| {diff:.2e} on {PROBE_WINDOWS} probe windows exceeds the "
                                       f"{backend} bound {BOUNDS[backend]:.0e}")
                self.max_abs_diff = diff
                log.info("backend %s ready in %.2f s (max |p - p_fp32| %.2e)", backend, time.perf_counter() - t0,
                         diff)
            except Exception as exc:  # any export/runtime problem: serve with torch fp32 and say why
                self.backend, self._session, self._keys, self.max_abs_diff = "torch", None, [], 0.0
                self.reduce_range = False
                self.fallback = f"{backend} unavailable, serving torch fp32: {type(exc).__name__}: {exc}"[:500]
                log.warning(self.fallback)

        self.inline_windows = self._inline_windows()

    def _inline_windows(self, budget_s: float = 1e-3) -> int:
        """How many windows one call may hold and still run on the event loop: calls measured under ``budget_s``
        (Serve's throughput-optimised mode runs handlers on the loop; longer work goes to a thread)."""
        x = np.zeros((1, self.pred.seq_len, self.pred.n_features), np.float32)
        self.predict_proba(x)  # warm-up
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            self.predict_proba(x)
            times.append(time.perf_counter() - t0)
        per_call = float(np.median(times))
        return int(min(8, budget_s // per_call)) if per_call < budget_s else 0

    def __getattr__(self, name: str) -> Any:  # only called for names ServedModel itself lacks
        return getattr(self.__dict__["pred"], name)

    # -- building ------------------------------------------------------------------------------------------------
    def _build(self, backend: str, reduce_range: bool = False) -> None:
        if backend == "torch-bf16":  # autocast at call time; nothing to build
            return
        import onnxruntime as ort
        with tempfile.TemporaryDirectory(prefix="stocktrend-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            self._keys = export_onnx(self.pred, path)
            if backend == "onnx-int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic
                q = Path(tmp) / "model.int8.onnx"
                logging.disable(logging.INFO)  # the quantizer logs one INFO line per tensor on the root logger
                try:
                    quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8, reduce_range=reduce_range)
                finally:
                    logging.disable(logging.NOTSET)
                path = q
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
            opts.log_severity_level = 3  # errors only
            self._session = ort.InferenceSession(path.read_bytes(), opts, providers=["CPUExecutionProvider"])

    def _probe_diff(self) -> float:
        x = np.random.default_rng(0).standard_normal((PROBE_WINDOWS, self.pred.seq_len, self.pred.n_features))
        x = x.astype(np.float32)
        ref, _ = self.pred.predict_proba(x, 512, False)
        got, _ = self.predict_proba(x, 512, False)
        diff = np.abs(got - ref)
        # A predicted return is ~1e-2 in size: its error counts relative to its spread over the probe windows (at
        # least 0.01, a typical 5-day move), so a backend that flips or scrambles returns cannot pass a bound set for
        # probabilities.
        for j, name in enumerate(self.pred.output_names):
            if name == "return":
                diff[:, j] /= max(float(ref[:, j].std()), 1e-2)
        return float(diff.max())

    # -- inference -----------------------------------------------------------------------------------------------
    def predict_proba(self, windows: np.ndarray, batch_size: int = 512,
                      return_attention: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        if self.backend in ("torch", "sklearn"):
            return self.pred.predict_proba(windows, batch_size, return_attention)
        if self.backend == "torch-bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.pred.predict_proba(windows, batch_size, return_attention)
        x = self.pred.check_windows(windows)
        outs, atts = [], []
        for a in range(0, len(x), batch_size):
            raw = dict(zip(self._keys, self._session.run(None, {"windows": x[a:a + batch_size]})))
            outs.append(self.pred.post(raw))
            if "attention" in raw:
                atts.append(raw["attention"])
        return np.concatenate(outs), (np.concatenate(atts) if return_attention and atts else None)

    def predict_prices(self, prices, market=None, indicators=None, attention: bool = False, ticker: str | None = None):
        """Raw bars -> the checkpoint's own feature path -> this backend (the Predictor's method, another backend)."""
        x = self.pred.features_from_prices(prices, market, indicators, ticker)
        out, att = self.predict_proba(x[None, -self.pred.seq_len:], return_attention=attention)
        return self.pred.describe(out, att)

    def describe_backend(self) -> dict[str, Any]:
        return {"backend": self.backend, "requested_backend": self.requested, "threads": self.threads,
                "max_abs_diff_vs_fp32": self.max_abs_diff, "fallback": self.fallback,
                **({"int8_weight_bits": 7 if self.reduce_range else 8} if self.backend == "onnx-int8" else {})}
