"""Requests that reach a replica together share one model call, and two batches run at a time (issue 29), decided by
the deployment's own class and its ``@serve.batch`` method on an event loop without Ray; the model is a double that
records each call's batch and answers from its input, so a mixed-up row would show.

The cases run in a child process (``python -m tests.serve.test_batching``): ``@serve.batch`` keeps one queue per
decorated method and process, bound to the loop it first ran on, and a class whose queue has run can no longer be
pickled for ``serve.run`` by the tests that follow in this process."""
import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = {"lone": (1, 32), "together": (24, 32), "capped": (24, 8), "off": (6, 1)}  # name: (requests, max_batch_size)


def _rows(x):
    """One row per window from its own content (each request's window is filled with its index)."""
    first = x[:, 0, 0]
    return np.stack([first, -first], axis=1)


class RecordingModel:
    inline_windows = 64  # every call runs inline on the loop, as a small model's does

    def __init__(self):
        self.calls: list[int] = []

    def predict_proba(self, x, chunk, attention):
        self.calls.append(len(x))
        return _rows(x), None


class BlockingModel:
    """Calls go to a worker thread (as a larger model's do); the first call holds until a second one has started, for
    at most HOLD_S: with two batches allowed at a time the second starts while the first runs, with one it cannot."""
    inline_windows = 0
    HOLD_S = 10.0

    def __init__(self):
        self.lock, self.second = threading.Lock(), threading.Event()
        self.active = self.most_active = self.calls = 0

    def predict_proba(self, x, chunk, attention):
        with self.lock:
            self.calls += 1
            first = self.calls == 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        if first:
            self.second.wait(self.HOLD_S)
        else:
            self.second.set()
        with self.lock:
            self.active -= 1
        return _rows(x), None


async def _arrive_together(svc, model, n: int, max_batch_size: int) -> list[float]:
    """n one-window requests (request i's window filled with i) reaching ``_infer`` in the same turn of the loop; the
    answers in request order."""
    svc.cfg["max_batch_size"] = max_batch_size  # what reconfigure() sets from user_config
    svc._batched.set_max_batch_size(max_batch_size)

    async def request(i: int) -> float:
        svc._inflight += 1  # what predict() does while a request is anywhere in the handler
        try:
            probs, _ = await svc._infer(model, np.full((1, 4, 3), i, np.float32))
            return float(probs[0, 0])
        finally:
            svc._inflight -= 1
    return await asyncio.wait_for(asyncio.gather(*(request(i) for i in range(n))), 60)


def _child() -> None:
    from types import SimpleNamespace

    import ray.serve.batching as batching

    from stocktrend.serve.app import StockTrendService
    # @serve.batch reads the replica's max_ongoing_requests (to warn) from Serve's replica context, which exists only
    # inside a replica: this one stands in for it.
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=32))
    batching.serve.get_replica_context = lambda: context

    async def main():
        cls = StockTrendService.func_or_class  # the class behind @serve.ingress, whose __init__ is a coroutine
        svc = cls.__new__(cls)
        await svc.__init__()  # as Serve builds a replica
        out = {}
        for name, (n, size) in CASES.items():
            model = RecordingModel()
            out[name] = (model.calls, await _arrive_together(svc, model, n, size))
        blocking = BlockingModel()  # (most model calls running at once, calls, answers)
        answers = await _arrive_together(svc, blocking, 24, 8)
        out["overlap"] = (blocking.most_active, blocking.calls, answers)
        return out
    print("RESULT " + json.dumps(asyncio.run(main())))


@pytest.fixture(scope="module")
def results() -> dict:
    r = subprocess.run([sys.executable, "-m", "tests.serve.test_batching"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(line.removeprefix("RESULT "))


def test_a_lone_request_runs_at_once(results):
    assert results["lone"] == [[1], [0.0]]


def test_requests_received_in_one_turn_of_the_loop_share_a_call(results):
    calls, answers = results["together"]
    assert answers == [float(i) for i in range(24)]  # each request gets its own row back
    assert sum(calls) == 24
    assert len(calls) <= 2, f"24 requests that arrived together took {len(calls)} model calls: {calls}"


def test_batches_keep_to_max_batch_size_and_batching_off_is_one_call_each(results):
    calls, answers = results["capped"]
    assert answers == [float(i) for i in range(24)] and max(calls) <= 8 and len(calls) <= 4, calls
    calls, answers = results["off"]
    assert calls == [1] * 6 and answers == [float(i) for i in range(6)]


def test_a_second_batch_runs_while_the_first_is_in_the_model(results):
    """Two batches at a time (issue 29: one replica's throughput): while one batch's model call runs in a worker
    thread, the next batch starts instead of waiting; never more than two."""
    most_active, calls, answers = results["overlap"]
    assert answers == [float(i) for i in range(24)]
    assert calls == 3 and most_active == 2, (calls, most_active)


if __name__ == "__main__":
    _child()
