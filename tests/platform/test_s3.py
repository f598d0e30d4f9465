"""Issue 28: STOCKTREND_STORAGE=s3://... for real, against a local S3-compatible server (moto in server mode, a
separate process on a free port). Every step is the CLI in a subprocess with the AWS variables a user would export:
a 2-worker Ray Train run and a search write their checkpoints to the bucket, the registry's artefacts go there (no
local artefact folder is created), and ``serve`` loads the model back from the bucket and answers over HTTP."""

import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.census import Census
from tests.cli import CLI, ROOT, cli_env, cli_ok, planted_csv_folder
from tests.ray.local_head import free_port

pytestmark = pytest.mark.slow
BUCKET = "stocktrend-test"


@pytest.fixture
def s3_server(tmp_path):
    """A moto S3 server process with one bucket; yields the AWS variables that point at it."""
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    log = open(tmp_path / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    end, last = time.monotonic() + 60, None
    while time.monotonic() < end:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception as exc:  # not listening yet
            last = exc
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"moto server did not start in 60 s: {last}")
    try:
        yield env, client
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _keys(client, prefix: str) -> list[str]:
    keys, token = [], None
    while True:
        kw = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def test_checkpoints_registry_and_serving_on_s3(tmp_path, s3_server):
    import ray
    ray.shutdown()  # the commands start their own local instances
    aws, client = s3_server
    data = planted_csv_folder(tmp_path, seed=3)
    home = tmp_path / "home"
    env = cli_env(home, **aws, STOCKTREND_STORAGE=f"s3://{BUCKET}/runs")

    def run(*args, timeout=400):
        return cli_ok(env, *args, timeout=timeout)

    common = ["--data", str(data), "--top-k", "8", "--sequence-length", "10"]
    # Ray Train, two workers: the run's checkpoints in the bucket, the registered version's artefacts too. Under
    # Ray's default token authentication, with issue 37's socket census of every process the commands start.
    env.pop("RAY_AUTH_MODE", None)
    with Census(home) as census:
        r = run("train", "--workers", "2", "--preset", "tiny", "--epochs", "2", "--accumulate", "1", *common)
    print(f"listening sockets of `stocktrend train --workers 2` ({len(census.listeners)}):\n{census.table()}")
    assert census.listeners and not census.exposed(), census.table()
    assert "registered   : stocktrend version 1" in r.stdout, r.stdout
    train_keys = _keys(client, "runs/ray/train-")
    assert any(k.endswith("/checkpoint.ckpt") for k in train_keys), train_keys[:20]
    model_keys = _keys(client, "runs/mlartifacts/")
    assert any(k.endswith("/model.pt") for k in model_keys) and any(k.endswith("/MLmodel") for k in model_keys), \
        model_keys[:20]

    # A search: its trials' checkpoints in the bucket, the best one registered with its artefacts there.
    with Census(home) as census:
        r = run("tune", "--preset", "tiny", "--num-samples", "2", "--max-epochs", "2", "--grace-period", "1",
                "--name", "s3-search", "--model-name", "s3-search", *common[:2])
    print(f"listening sockets of `stocktrend tune` ({len(census.listeners)}):\n{census.table()}")
    assert census.listeners and not census.exposed(), census.table()
    assert "registered: s3-search version 1" in r.stdout, r.stdout[-2000:]
    tune_keys = _keys(client, "runs/tune/s3-search/")
    assert sum(k.endswith("/checkpoint.ckpt") for k in tune_keys) >= 2, tune_keys[:20]
    assert not (home / "mlartifacts").exists() and not (home / "ray").exists() and not (home / "tune").exists()
    sources = [k for k in _keys(client, "runs/mlartifacts/") if k.endswith("MLmodel")]
    assert len(sources) >= 2, sources  # one MLflow Model per registered version

    # serve loads production (version 1 of the train run) back from the bucket.
    port = free_port()
    p = subprocess.Popen([CLI, "serve", "--port", str(port), "--max-replicas", "1"], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if line.startswith("metrics:"):
                break
        info = httpx.get(f"http://127.0.0.1:{port}/model", timeout=60).json()
        assert info["version"] in (1, "1"), info
        answer = httpx.post(f"http://127.0.0.1:{port}/predict/ticker", json={"ticker": "SIG0"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert set(answer.json()["probabilities"]) == {"Bajista", "Alcista"}
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    assert not (home / "mlartifacts").exists()


def test_bars_from_an_s3_folder_for_the_evening_job(s3_server, tmp_path, monkeypatch):
    """--data / STOCKTREND_DATA = s3://bucket/prefix (issue 36): the folder is read through a local snapshot, the same
    universe as the local folder; an unchanged folder is not downloaded again, new bars make a new snapshot; the CLI
    reads it (retrain and score take it from $STOCKTREND_DATA: tests/loop); a wrong prefix is one error."""
    from stocktrend.platform.data.remote import local_copy
    from stocktrend.platform.data.sources import DataValidationError
    from stocktrend.platform.data.universes import load_universe
    env, client = s3_server
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path / "home"))
    data = planted_csv_folder(tmp_path, seed=9)
    for f in sorted(data.rglob("*.csv")):
        client.upload_file(str(f), BUCKET, f"bars/{f.relative_to(data).as_posix()}")
    uri = f"s3://{BUCKET}/bars"
    remote, local = load_universe(uri), load_universe(data)
    assert sorted(remote.tickers) == sorted(local.tickers) and sorted(remote.market) == sorted(local.market)
    for t in local.tickers:
        assert remote.tickers[t]["close"].equals(local.tickers[t]["close"])
    snapshots = tmp_path / "home" / "cache" / "bars"
    first = local_copy(uri)
    assert [p.name for p in snapshots.iterdir()] == [first.name]  # the second read did not copy again
    time.sleep(1.1)  # a new modification time for the changed object
    client.upload_file(str(sorted(data.glob("*.csv"))[0]), BUCKET, "bars/EXTRA.csv")
    assert "EXTRA" in load_universe(uri).tickers and len(list(snapshots.iterdir())) == 2
    with pytest.raises(DataValidationError, match="no .csv or .parquet files"):
        load_universe(f"s3://{BUCKET}/nothing-here")
    r = subprocess.run([CLI, "data", "build", "--data", uri, "--top-k", "8"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=cli_env(tmp_path / "home2", **env))
    assert r.returncode == 0 and "EXTRA" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
