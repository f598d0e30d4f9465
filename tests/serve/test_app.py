"""The Serve app over real HTTP on loopback: parity with in-process predictions, bad input, auth, hot swap, replica
loss and autoscaling. One Serve instance for the module."""

import threading
import time

import httpx
import numpy as np
import pytest

from stocktrend.platform.registry import mlflow_registry as registry
from stocktrend.platform.registry.checkpoint import Predictor
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.training.jobs import train_job
from stocktrend.platform.data.sources import load_embedded
from stocktrend.platform.training.local import TrainConfig
from tests.ray.local_head import free_port

pytestmark = pytest.mark.slow
QUICK = TrainConfig(preset="tiny", epochs=1, batch_size=64, accumulate=1, progress=False)


@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory):
    import os

    from ray import serve

    from stocktrend.serve.app import StockTrendService, app_builder
    home = tmp_path_factory.mktemp("serve-home")
    old = os.environ.get("STOCKTREND_HOME")
    os.environ["STOCKTREND_HOME"] = str(home)  # the replicas inherit it through the local Ray instance's env
    data = build_dataset(DataConfig(top_k=12, sequence_length=20))
    for _ in range(2):
        train_job(data.config, QUICK, model_name="svc", data=data)
    registry.promote("svc", 1)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 30})
    args = {"model": "svc@production", "poll_interval_s": 1, "min_replicas": 1, "max_replicas": 2,
            "target_ongoing_requests": 2, "upscale_delay_s": 1, "downscale_delay_s": 4, "look_back_period_s": 5,
            "num_cpus": 0.25, "max_batch_size": 16, "env_vars": {"STOCKTREND_HOME": str(home)}}
    serve.run(app_builder(args), name="stocktrend", route_prefix="/")
    secure = StockTrendService.options(
        name="secure", ray_actor_options={"num_cpus": 0.1,
                                          "runtime_env": {"env_vars": {"STOCKTREND_API_TOKEN": "s3cret",
                                                                       "STOCKTREND_HOME": str(home)}}},
        autoscaling_config={"min_replicas": 1, "max_replicas": 1},
        user_config={"model": "svc@1", "poll_interval_s": 0}).bind()
    serve.run(secure, name="secure", route_prefix="/secure")
    # The seeds' 3-class label (Bajista / Neutral / Alcista), served beside the binary model.
    from dataclasses import replace
    train_job(replace(data.config, label_kind="ternary"), QUICK, model_name="svc3")
    three = StockTrendService.options(
        name="three", ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": {"STOCKTREND_HOME": str(home)}}},
        autoscaling_config={"min_replicas": 1, "max_replicas": 1},
        user_config={"model": "svc3@1", "poll_interval_s": 0}).bind()
    serve.run(three, name="three", route_prefix="/three")
    # The zoo: one version per model kind under one name; a deployment follows its production alias.
    from stocktrend.models import zoo
    versions = {}
    for kind in zoo.KINDS:
        cfg = replace(data.config, label_kind=zoo.get(kind).label_for(data.config.label_kind))
        versions[kind] = train_job(cfg, replace(QUICK, model=kind), model_name="zoo",
                                   data=data if cfg == data.config else None).version
    registry.promote("zoo", versions["hybrid"])
    zoo_app = StockTrendService.options(
        name="zoo", ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": {"STOCKTREND_HOME": str(home)}}},
        autoscaling_config={"min_replicas": 1, "max_replicas": 1},
        user_config={"model": "zoo@production", "poll_interval_s": 1}).bind()
    serve.run(zoo_app, name="zoo", route_prefix="/zoo")
    url = f"http://127.0.0.1:{port}"
    yield {"url": url, "data": data, "home": home, "zoo": versions}
    serve.shutdown()
    if old is None:
        os.environ.pop("STOCKTREND_HOME", None)
    else:
        os.environ["STOCKTREND_HOME"] = old


def _windows(data, n=5):
    return data.windows(data.samples["test"][:n])


def test_predictions_over_http_equal_in_process(served):
    data = served["data"]
    path, _ = registry.download("svc", "1")
    pred = Predictor.load(path)
    x = data.with_transforms(pred.transforms).windows(data.samples["test"][:7])
    r = httpx.post(f"{served['url']}/predict", json={"windows": x.tolist(), "attention": True}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1 and len(body["predictions"]) == 7
    expected, att = pred.predict_proba(x, return_attention=True)
    got = np.array([[p["probabilities"][n] for n in pred.class_names] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array([p["attention"] for p in body["predictions"]]), att, rtol=1e-5, atol=1e-6)
    assert {p["signal"] for p in body["predictions"]} <= {"BUY", "SELL"}

    msft = load_embedded().tickers["MSFT"].iloc[-400:]
    bars = [{"date": str(d.date()), **{k: float(v) for k, v in row.items()}} for d, row in msft.iterrows()]
    r = httpx.post(f"{served['url']}/predict/ticker", json={"prices": bars, "attention": True}, timeout=60)
    assert r.status_code == 200, r.text
    local = pred.predict_prices(msft, load_embedded().market)
    assert r.json()["date"] == "2017-11-10" and r.json()["label"] == local.labels[0]
    assert r.json()["probabilities"]["Alcista"] == pytest.approx(local.probabilities[0][1], rel=1e-5)
    assert len(r.json()["attention"]) == 20

    info = httpx.get(f"{served['url']}/model", timeout=10).json()
    assert info["version"] == 1 and info["alias"] == "production" and info["n_features"] == 12
    assert httpx.get(f"{served['url']}/healthz", timeout=10).json()["status"] == "ok"
    assert "/predict" in httpx.get(f"{served['url']}/openapi.json", timeout=10).json()["paths"]


def _promote_and_wait(url, version, kind, timeout=60):
    registry.promote("zoo", version)
    assert _wait(lambda: httpx.get(f"{url}/model", timeout=10).json().get("version") == version, timeout), kind


def test_every_zoo_model_serves_its_outputs_over_http(served):
    """Hot swaps between kinds on one endpoint; each answers with its own fields and /model says what it is."""
    url = served["url"] + "/zoo"
    body = {"windows": [[[0.1] * 12] * 20] * 3}
    for kind, version in served["zoo"].items():
        _promote_and_wait(url, version, kind)
        info = httpx.get(f"{url}/model", timeout=10).json()
        assert info["model_kind"] == kind
        r = httpx.post(f"{url}/predict", json=body, timeout=30)
        assert r.status_code == 200, (kind, r.text)
        p = r.json()["predictions"][0]
        if kind == "lstm_transformer":
            assert info["outputs"] == ["return", "confidence"] and p["probabilities"] == {}
            assert isinstance(p["predicted_return"], float) and 0 < p["confidence"] < 1
            assert p["label"] == ("Alcista" if p["predicted_return"] >= 0 else "Bajista")
        else:
            assert set(p["probabilities"]) == {"Bajista", "Alcista"}
            assert (p["predicted_return"] is not None) == (kind == "mtl_lstm")
        assert p["attention"] is None  # attention only on request
        if kind in ("rf", "gbm"):
            assert info["backend"] == "sklearn" and "scikit-learn" in info["fallback"]
        t = httpx.post(f"{url}/predict/ticker", json={"ticker": "MSFT"}, timeout=60)
        assert t.status_code == 200, (kind, t.text)


def test_hot_swap_between_model_kinds_under_load(served):
    url = served["url"] + "/zoo"
    _promote_and_wait(url, served["zoo"]["hybrid"], "hybrid")
    with Loop(url) as loop:
        time.sleep(1)
        registry.promote("zoo", served["zoo"]["lstm"])
        assert _wait(lambda: httpx.get(f"{url}/model", timeout=10).json()["model_kind"] == "lstm", 30)
        time.sleep(1)
    assert loop.failed == [] and loop.ok > 10
    assert loop.versions == {served["zoo"]["hybrid"], served["zoo"]["lstm"]}


def test_three_class_model_answers_three_probabilities(served):
    url = served["url"] + "/three"
    info = httpx.get(f"{url}/model", timeout=10).json()
    assert info["label_kind"] == "ternary" and info["class_names"] == ["Bajista", "Neutral", "Alcista"]
    r = httpx.post(f"{url}/predict", json={"windows": [[[0.1] * 12] * 20] * 2}, timeout=30)
    assert r.status_code == 200, r.text
    for p in r.json()["predictions"]:
        assert set(p["probabilities"]) == {"Bajista", "Neutral", "Alcista"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["signal"] == {"Bajista": "SELL", "Neutral": "HOLD", "Alcista": "BUY"}[p["label"]]
    r = httpx.post(f"{url}/predict/ticker", json={"ticker": "MSFT"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["probabilities"]) == 3


def test_by_ticker_name_equals_the_raw_bars_route(served):
    url = served["url"]
    msft = load_embedded().tickers["MSFT"]
    hist = msft.loc[:"2016-06-01"]  # the same bars the server uses by name: the whole history up to as_of
    bars = [{"date": str(d.date()), **{k: float(v) for k, v in row.items()}} for d, row in hist.iterrows()]
    raw = httpx.post(f"{url}/predict/ticker", json={"prices": bars[-5000:]}, timeout=60)
    by_name = httpx.post(f"{url}/predict/ticker", json={"ticker": "MSFT", "as_of": "2016-06-01"}, timeout=60)
    assert raw.status_code == 200 and by_name.status_code == 200, by_name.text
    assert by_name.json()["date"] == raw.json()["date"] == str(hist.index[-1].date())
    assert by_name.json()["probabilities"] == pytest.approx(raw.json()["probabilities"], abs=1e-6)
    latest = httpx.post(f"{url}/predict/ticker", json={"ticker": "MSFT"}, timeout=60).json()
    assert latest["date"] == "2017-11-10" and latest["ticker"] == "MSFT"
    cases = [({"ticker": "AAPL"}, 404, "unknown ticker 'AAPL': this model answers for MSFT"),
             ({"ticker": "MSFT", "as_of": "2030-01-01"}, 422, "outside MSFT's data (1986-03-13 .. 2017-11-10)"),
             ({"ticker": "MSFT", "as_of": "soon"}, 422, "not a date"),
             ({}, 422, "send 'prices'"),
             ({"prices": bars, "as_of": "2016-01-04"}, 422, "'as_of' applies to predictions by ticker name")]
    for body, status, message in cases:
        r = httpx.post(f"{url}/predict/ticker", json=body, timeout=60)
        assert r.status_code == status and message in r.text, (body, r.status_code, r.text)


def _bars(n=400):
    msft = load_embedded().tickers["MSFT"].iloc[-n:]
    return [{"date": str(d.date()), **{k: float(v) for k, v in row.items()}} for d, row in msft.iterrows()]


BAD = [
    ("/predict", {"windows": [[[0.0] * 12] * 19]}, 422, "shape [batch][20][12]"),
    ("/predict", {"windows": [[[0.0] * 11] * 20]}, 422, "shape [batch][20][12]"),
    ("/predict", {"windows": []}, 422, "at least 1"),
    ("/predict", {"windows": [[["a"] * 12] * 20]}, 422, "valid number"),
    ("/predict", {"windows": [[[0.0] * 12] * 20, [[0.0] * 12] * 19]}, 422, "rectangular"),
    ("/predict", {"windows": [[[0.0] * 12] * 20] * 300}, 413, "exceed the limit of 256"),
    ("/predict", {"windows": [[[0.0] * 12] * 20], "version": 9}, 404, "version 9 is not served"),
    ("/predict", {"wndows": []}, 422, "Field required"),
]


@pytest.mark.parametrize("route,payload,status,message", BAD)
def test_bad_input_is_a_clear_4xx_and_the_next_request_works(served, route, payload, status, message):
    r = httpx.post(f"{served['url']}{route}", json=payload, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.text
    good = httpx.post(f"{served['url']}/predict", json={"windows": [[[0.0] * 12] * 20]}, timeout=30)
    assert good.status_code == 200


def test_nan_inf_history_and_body_limits(served):
    url = served["url"]
    nan_body = '{"windows": [[' + ",".join(["[" + ",".join(["NaN"] * 12) + "]"] * 20) + "]]}"
    r = httpx.post(f"{url}/predict", content=nan_body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422 and "NaN or infinite" in r.text
    bars = _bars(100)
    r = httpx.post(f"{url}/predict/ticker", json={"prices": bars}, timeout=30)
    assert r.status_code == 422 and "too little history" in r.text
    bars = _bars()
    bars[10], bars[11] = bars[11], bars[10]
    r = httpx.post(f"{url}/predict/ticker", json={"prices": bars}, timeout=30)
    assert r.status_code == 422 and "dates are not sorted" in r.text
    bars = _bars()
    bars[12] = dict(bars[11])
    r = httpx.post(f"{url}/predict/ticker", json={"prices": bars}, timeout=30)
    assert r.status_code == 422 and "duplicate" in r.text
    bars = _bars()
    bars[5]["close"] = -3.0
    r = httpx.post(f"{url}/predict/ticker", json={"prices": bars}, timeout=30)
    assert r.status_code == 422 and "non-positive price" in r.text
    big = b'{"windows": [' + b"0" * (9 * 2**20) + b"]}"
    r = httpx.post(f"{url}/predict", content=big, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "exceeds" in r.text

    def chunks():  # no Content-Length (chunked): counted while read, on both routes
        yield b'{"prices": ['
        for _ in range(9 * 16):
            yield b" " * 2**16
        yield b"]}"
    for route in ("/predict/ticker", "/predict"):
        r = httpx.post(f"{url}{route}", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413 and "exceeds" in r.text, (route, r.status_code, r.text[:200])
    assert httpx.post(f"{url}/predict", json={"windows": [[[0.0] * 12] * 20]}, timeout=30).status_code == 200


def _npy(a) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_binary_npy_body(served):
    """A .npy body gives the same answer as JSON; pickled object arrays, junk and bad query values are a clear 422."""
    url, data = served["url"], served["data"]
    pred = Predictor.load(registry.download("svc", "1")[0])
    x = data.with_transforms(pred.transforms).windows(data.samples["test"][:3]).astype(np.float32)
    npy = {"content-type": "application/x-npy"}
    r_json = httpx.post(f"{url}/predict", json={"windows": x.tolist(), "attention": True}, timeout=30)
    r_npy = httpx.post(f"{url}/predict?attention=true", content=_npy(x), headers=npy, timeout=30)
    assert r_npy.status_code == 200, r_npy.text
    assert r_npy.json()["predictions"] == r_json.json()["predictions"]
    assert r_npy.json()["predictions"][0]["attention"] is not None
    assert httpx.post(f"{url}/predict", content=_npy(x.astype(np.float64)), headers=npy,
                      timeout=30).json()["predictions"][0]["attention"] is None
    cases = [(_npy(np.array([{"a": 1}], dtype=object)), "", 422, "not a readable .npy array"),  # pickles refused
             (b"not numpy at all", "", 422, "not a readable .npy array"),
             (_npy(np.array(["a", "b"])), "", 422, "must be numeric"),
             (_npy(x[:, :5]), "", 422, "shape [batch][20][12]"),
             (_npy(np.zeros((0, 20, 12), np.float32)), "", 422, "at least 1 window"),
             (_npy(np.zeros((300, 20, 12), np.float32)), "", 413, "exceed the limit of 256"),
             (_npy(np.full((1, 20, 12), np.inf, np.float32)), "", 422, "NaN or infinite"),
             (_npy(x), "?version=abc", 422, "version must be an integer"),
             (_npy(x), "?version=7", 404, "version 7 is not served")]
    for body, query, status, message in cases:
        r = httpx.post(f"{url}/predict{query}", content=body, headers=npy, timeout=30)
        assert r.status_code == status and message in r.text, (message, r.status_code, r.text)
    assert "application/x-npy" in httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]["/predict"]["post"][
        "requestBody"]["content"]


def test_auth(served):
    url = served["url"] + "/secure"
    ok = {"windows": [[[0.0] * 12] * 20]}
    assert httpx.post(f"{url}/predict", json=ok, timeout=30).status_code == 401
    assert httpx.post(f"{url}/predict", json=ok, headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 401
    r = httpx.post(f"{url}/predict", json=ok, headers={"Authorization": "Bearer s3cret"}, timeout=30)
    assert r.status_code == 200, r.text
    # The token is checked before the body is validated: no validation details for a caller without it.
    assert httpx.post(f"{url}/predict/ticker", json={"bogus": 1}, timeout=30).status_code == 401
    r = httpx.post(f"{url}/predict/ticker", json={"bogus": 1}, headers={"Authorization": "Bearer s3cret"}, timeout=30)
    assert r.status_code == 422, r.text


class Loop:
    """Sends good requests from threads until stopped; counts successes and failures."""

    def __init__(self, url, threads=1, windows=1):
        self.url, self.ok, self.failed, self.versions = url, 0, [], set()
        self.body = {"windows": [[[0.1] * 12] * 20] * windows}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.post(f"{self.url}/predict", json=self.body)
                    if r.status_code == 200:
                        self.ok += 1
                        self.versions.add(r.json()["version"])
                    else:
                        self.failed.append(r.status_code)
                except httpx.HTTPError as exc:
                    self.failed.append(type(exc).__name__)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _wait(pred, timeout, step=0.5):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def test_hot_swap_under_load_has_zero_failures(served):
    url = served["url"]
    with Loop(url) as loop:
        time.sleep(1)
        registry.promote("svc", 2)
        assert _wait(lambda: httpx.get(f"{url}/model", timeout=10).json()["version"] == 2, 30)
        time.sleep(1)
    assert loop.failed == [] and loop.ok > 10 and loop.versions == {1, 2}
    registry.rollback("svc")
    assert _wait(lambda: httpx.get(f"{url}/model", timeout=10).json()["version"] == 1, 30)


def _replicas(app="stocktrend"):
    from ray import serve
    dep = serve.status().applications[app].deployments["StockTrendService"]
    return sum(dep.replica_states.values()), dep.replica_states


def test_killed_replica_is_replaced(served):
    import ray
    from ray.util.state import list_actors
    with Loop(served["url"]) as loop:
        time.sleep(1)
        # This test process's instance: without an address Ray's state API looks for every GCS on the machine
        actors = [a for a in list_actors(address=ray.get_runtime_context().gcs_address,
                                         filters=[("state", "=", "ALIVE")])
                  if "StockTrendService" in a.class_name and "secure" not in (a.name or "")]
        assert actors
        ray.kill(ray.get_actor(actors[0].name, namespace="serve"), no_restart=True)
        assert _wait(lambda: _replicas()[1].get("RUNNING", 0) >= 1 and len(loop.failed) < 50, 60)
        time.sleep(3)
    assert len(loop.failed) <= 5, loop.failed
    assert httpx.post(f"{served['url']}/predict", json={"windows": [[[0.0] * 12] * 20]}, timeout=30).status_code == 200


def test_autoscaling_up_and_down(served):
    # 200-window requests keep the replica busy (a 1-window request is answered faster than 8 client threads can send
    # the next one, so the ongoing count would never reach the target of 2); a new replica takes ~10-20 s to start here.
    with Loop(served["url"], threads=8, windows=200):
        assert _wait(lambda: _replicas()[1].get("RUNNING", 0) >= 2, 120), _replicas()
    assert _wait(lambda: _replicas()[0] == 1, 90), _replicas()


def _ray_metrics() -> str:
    from stocktrend.serve.ingress import metrics_url
    return httpx.get(metrics_url(), timeout=10).text


def test_metrics_reach_rays_endpoint_with_serve_tags(served):
    """The platform's metrics go through ray.serve.metrics to Ray's Prometheus endpoint, tagged per application and
    replica, next to Serve's own request counters: one scrape of every node gives totals across replicas."""
    for _ in range(5):
        assert httpx.post(f"{served['url']}/predict", json={"windows": [[[0.2] * 12] * 20] * 3}, timeout=30).status_code == 200
    wanted = ("ray_stocktrend_predictions_total", "ray_stocktrend_confidence_bucket", "ray_stocktrend_batch_size_bucket",
              "ray_stocktrend_model_version", "ray_serve_deployment_request_counter")
    assert _wait(lambda: all(w in _ray_metrics() for w in wanted), 60, step=2), \
        [w for w in wanted if w not in _ray_metrics()]
    text = _ray_metrics()
    line = next(ln for ln in text.splitlines() if ln.startswith("ray_stocktrend_predictions_total") and 'application="stocktrend"' in ln)
    assert 'model="svc"' in line and 'backend="onnx"' in line and "replica=" in line and 'label="' in line
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert httpx.get(f"{served['url']}/metrics", timeout=10).status_code == 404  # no per-replica page posing as totals
