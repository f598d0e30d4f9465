"""Request and response models of the HTTP API (pydantic v2). Shapes are checked against the served model in the
deployment, where its sequence length and feature count are known; here only structure and limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stocktrend.models import DEFAULT_KIND


class PredictRequest(BaseModel):
    """Windows already scaled and selected as ``GET /model`` describes: [batch][sequence_length][n_features]."""

    model_config = ConfigDict(extra="forbid")
    windows: list[list[list[float]]] = Field(..., min_length=1, description="[batch][sequence_length][n_features]")
    attention: bool = Field(False, description="also return the attention weight of every day")
    version: int | None = Field(None, description="refuse to answer unless this model version is served")


class Bar(BaseModel):
    """One daily bar. open/high/low (together) and volume are optional: close-only models need only the close."""

    model_config = ConfigDict(extra="forbid")
    date: str
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float
    volume: float | None = None


class MarketBar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    date: str
    close: float


class TickerRequest(BaseModel):
    """Raw daily history, oldest first (the server computes features exactly as in training), or just a ticker of the
    model's universe (the server uses that universe's bars, up to ``as_of``)."""

    model_config = ConfigDict(extra="forbid")
    prices: list[Bar] | None = Field(None, min_length=1, description="raw daily bars, oldest first")
    ticker: str | None = Field(None, description="a ticker of the model's universe (alone: its own bars are used; "
                                                 "with prices: names them, for models that take the ticker's "
                                                 "identity)")
    as_of: str | None = Field(None, description="with ticker alone: the last day of history to use (YYYY-MM-DD; "
                                                "default its last day)")
    market: dict[str, list[MarketBar]] | None = Field(
        None, description="market series by the names used in training (default: the embedded series, if the "
                          "model was trained on them)")
    attention: bool = False
    version: int | None = None


class ItemPrediction(BaseModel):
    probabilities: dict[str, float]  # per class (empty for regression models)
    label: str  # the class, or the direction of the predicted return (Alcista >= 0 > Bajista)
    signal: str  # BUY / SELL / HOLD
    confidence: float  # the top class's probability, or (regression) P(the predicted direction is right)
    predicted_return: float | None = None  # regression and multi-task models: the forward return over the horizon
    attention: list[float] | None = None  # hybrid models: the weight of each day of the window


class PredictResponse(BaseModel):
    model: str
    version: int | None  # the version that answered
    role: str = "champion"  # champion | challenger: which deployment answered
    predictions: list[ItemPrediction]


class TickerResponse(ItemPrediction):
    model: str
    version: int | None  # the version that answered
    role: str = "champion"  # champion | challenger
    date: str  # the last day of the history: the prediction is for the next ``horizon`` days
    ticker: str | None = None


class ModelInfo(BaseModel):
    name: str
    version: int | None
    alias: str | None
    model_kind: str = DEFAULT_KIND  # stocktrend.models.zoo.KINDS
    outputs: list[str] = []  # columns of the model's output: class names, then return (and confidence)
    label_kind: str
    class_names: list[str]
    sequence_length: int
    n_features: int
    horizon: int
    data_hash: str
    metrics: dict[str, float]
    features: list[str]  # the selected features, in model input order
    market: list[str] | None
    backend: str = "torch"  # what serves: torch | torch-bf16 | onnx | onnx-int8
    requested_backend: str = "torch"
    threads: int = 1  # torch / ONNX Runtime intra-op threads of the replica
    max_abs_diff_vs_fp32: float = 0.0  # on the load-time probe windows
    fallback: str | None = None  # why the requested backend is not the one serving
    int8_weight_bits: int | None = None  # onnx-int8: 8, or 7 where 8-bit weights missed the bound (no VNNI)
    challenger: str | None = None  # the challenger's reference, when one is deployed
    challenger_split: float = 0.0  # share of requests it answers now (0 when shadowing or after failures)
    shadow: bool = False  # it gets a copy of every request instead
