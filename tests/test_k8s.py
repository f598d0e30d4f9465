"""Issue 28: the KubeRay manifests under deploy/k8s, checked offline.

- the committed files are what ``stocktrend k8s render`` writes (never edited by hand);
- core objects (ConfigMap, Secret, PVC, CronJob) and every pod template of the Ray custom resources against the
  Kubernetes schemas (kubernetes-validate, strict: an unknown field fails);
- RayJob / RayService / RayCluster against the KubeRay CRD schemas in deploy/k8s/schemas (see its README for their
  source and licence);
- the RayService's serveConfigV2 against Ray's own ServeDeploySchema;
- every command line in them parsed by the platform's own parsers (and ``ray job submit``'s).
Each check is also shown to fail on a typo, so none of them can pass by accident."""

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBE_VERSION = "1.33.0"
CRD_SCHEMAS = {"RayJob": "rayjob.json", "RayService": "rayservice.json", "RayCluster": "raycluster.json"}


def _docs() -> list[dict]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def _by_kind(kind: str) -> list[dict]:
    return [d for d in _docs() if d["kind"] == kind]


def _pod_templates(doc: dict) -> list[dict]:
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
    return [cluster["headGroupSpec"]["template"], *[g["template"] for g in cluster["workerGroupSpecs"]]]


def _k8s_validate(doc: dict) -> None:
    import kubernetes_validate
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def _as_pod_template(template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}


def _crd_validate(doc: dict) -> None:
    import jsonschema
    schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[doc["kind"]]).read_text())["schema"]
    jsonschema.validate(doc, schema)


def test_committed_manifests_are_the_rendered_ones(tmp_path):
    r = subprocess.run([str(Path(sys.executable).parent / "stocktrend"), "k8s", "render", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rendered = sorted(p.name for p in tmp_path.glob("*.yaml"))
    committed = sorted(p.name for p in K8S.glob("*.yaml"))
    assert rendered == committed
    for name in rendered:
        assert (tmp_path / name).read_text() == (K8S / name).read_text(), (
            f"deploy/k8s/{name} differs from `stocktrend k8s render` (edited by hand, or serve_config.yaml / "
            f"stocktrend/serve/k8s.py changed without rendering again)")


def test_core_objects_and_pod_templates_match_the_kubernetes_schemas():
    kinds = {d["kind"] for d in _docs()}
    assert {"ConfigMap", "Secret", "PersistentVolumeClaim", "CronJob", "RayJob", "RayService",
            "RayCluster"} <= kinds
    for doc in _docs():
        if doc["apiVersion"].startswith("ray.io/"):
            for template in _pod_templates(doc):
                _k8s_validate(_as_pod_template(template))
        else:
            _k8s_validate(doc)


def test_kubernetes_validation_fails_on_a_typo():
    import kubernetes_validate
    cron = copy.deepcopy(_by_kind("CronJob")[0])
    cron["spec"]["schedul"] = cron["spec"].pop("schedule")
    with pytest.raises(kubernetes_validate.ValidationError):
        _k8s_validate(cron)
    template = copy.deepcopy(_pod_templates(_by_kind("RayService")[0])[0])
    template["spec"]["containers"][0]["envForm"] = template["spec"]["containers"][0].pop("envFrom")
    with pytest.raises(kubernetes_validate.ValidationError):
        _k8s_validate(_as_pod_template(template))


def test_ray_resources_match_the_kuberay_crd_schemas():
    import jsonschema
    for doc in _docs():
        if doc["kind"] in CRD_SCHEMAS:
            _crd_validate(doc)
    job = copy.deepcopy(_by_kind("RayJob")[0])
    job["spec"]["entrypoit"] = job["spec"].pop("entrypoint")
    with pytest.raises(jsonschema.ValidationError):
        _crd_validate(job)
    service = copy.deepcopy(_by_kind("RayService")[0])
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(jsonschema.ValidationError):
        _crd_validate(service)


def test_serve_config_v2_is_a_valid_serve_deploy_config():
    import pydantic
    from ray.serve.schema import ServeDeploySchema
    service = _by_kind("RayService")[0]
    text = service["spec"]["serveConfigV2"]
    assert isinstance(text, str)  # KubeRay wants the Serve config as a YAML string
    cfg = yaml.safe_load(text)
    ServeDeploySchema(**cfg)
    assert cfg == yaml.safe_load((ROOT / "serve_config.yaml").read_text())  # generated from it
    bad = copy.deepcopy(cfg)
    bad["applications"][0]["improt_path"] = bad["applications"][0].pop("import_path")
    with pytest.raises((pydantic.ValidationError, ValueError)):
        ServeDeploySchema(**bad)


def _every_node_has_ingress_env(doc: dict) -> bool:
    from stocktrend.serve.k8s import INGRESS_ENV
    for template in _pod_templates(doc):
        for c in template["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if any(env.get(k) != v for k, v in INGRESS_ENV.items()):
                return False
    return True


def test_every_ray_node_gets_the_haproxy_ingress_variables():
    for doc in _by_kind("RayService") + _by_kind("RayCluster") + _by_kind("RayJob"):
        assert _every_node_has_ingress_env(doc), doc["metadata"]["name"]


def _token_auth(container: dict) -> bool:
    """RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the stocktrend-ray-token Secret (not optional)."""
    from stocktrend.serve.k8s import RAY_TOKEN_SECRET
    env = {e["name"]: e for e in container.get("env", [])}
    ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    return (env.get("RAY_AUTH_MODE", {}).get("value") == "token" and ref.get("name") == RAY_TOKEN_SECRET
            and ref.get("key") == "auth_token" and not ref.get("optional") and "value" not in env["RAY_AUTH_TOKEN"])


def _ray_clients_and_nodes() -> list[tuple[str, dict]]:
    """Every container that runs Ray or talks to a Ray cluster: the nodes of RayService / RayCluster / RayJob, the
    RayJob's submitter, the evening CronJob."""
    out = []
    for doc in _by_kind("RayService") + _by_kind("RayCluster") + _by_kind("RayJob"):
        for template in _pod_templates(doc):
            out += [(doc["metadata"]["name"], c) for c in template["spec"]["containers"]]
        if doc["kind"] == "RayJob":
            out += [(doc["metadata"]["name"] + "/submitter", c)
                    for c in doc["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    for doc in _by_kind("CronJob"):
        out += [(doc["metadata"]["name"], c)
                for c in doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]]
    return out


def test_every_ray_node_and_client_runs_with_token_auth_from_a_secret_and_no_token_is_committed():
    found = _ray_clients_and_nodes()
    assert len(found) == 3 * 2 + 2  # RayService, RayCluster, RayJob x (head, workers), the submitter, the CronJob
    for where, c in found:
        assert _token_auth(c), (where, c["name"])
    text = "".join(p.read_text() for p in K8S.glob("*.yaml"))
    assert "auth_token:" not in text and "RAY_AUTH_TOKEN: " not in text  # a value would be a committed token
    # the check fails when one container loses it
    where, c = found[0]
    broken = copy.deepcopy(c)
    broken["env"] = [e for e in broken["env"] if e["name"] != "RAY_AUTH_MODE"]
    assert not _token_auth(broken)
    broken = copy.deepcopy(c)
    next(e for e in broken["env"] if e["name"] == "RAY_AUTH_TOKEN")["valueFrom"]["secretKeyRef"]["optional"] = True
    assert not _token_auth(broken)


def _parse_platform_command(argv: list[str]) -> None:
    """Parse (never run) a platform command line with the platform's own parser; raise on any bad flag."""
    import typer

    from stocktrend.cli import app
    assert argv[:2] == ["python", "-m"], argv
    module, args = argv[2], argv[3:]
    group = typer.main.get_command(app)
    if module == "stocktrend.tune.search":  # the module's entry point is `stocktrend tune`
        module, args = "stocktrend", ["tune", *args]
    if module == "stocktrend" and args[0] == "tune":
        with group.context_class(group) as ctx:
            group.get_command(ctx, "tune").make_context("tune", list(args[1:]), parent=ctx)
        return
    assert module == "stocktrend.loop" and args[0] in ("retrain", "score"), argv
    with group.context_class(group) as ctx:
        group.get_command(ctx, args[0]).make_context(args[0], list(args[1:]), parent=ctx)


def _ray_job_submits(script: str) -> list[list[str]]:
    out = []
    for part in script.split(";"):
        words = shlex.split(part)
        if words[:3] == ["ray", "job", "submit"]:
            out.append(words[3:])
        else:
            assert words in (["set", "-e"],), words
    return out


def test_every_command_line_parses():
    from ray.dashboard.modules.job.cli import submit
    lines = [shlex.split(job["spec"]["entrypoint"]) for job in _by_kind("RayJob")]
    for cron in _by_kind("CronJob"):
        container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:2] == ["bash", "-c"]
        for args in _ray_job_submits(container["command"][2]):
            submit.make_context("submit", list(args))  # ray job submit's own click parser
            lines.append(args[args.index("--") + 1:])
    assert len(lines) == 3  # the search, the evening retrain, the evening score
    for argv in lines:
        _parse_platform_command(argv)


def test_a_bad_flag_in_a_command_line_fails_to_parse():
    with pytest.raises(Exception, match="No such option: --num-sample"):  # no abbreviations: a prefix is a typo
        _parse_platform_command(["python", "-m", "stocktrend.tune.search", "--num-sample", "4"])
    with pytest.raises(Exception, match="No such option: --worker"):
        _parse_platform_command(["python", "-m", "stocktrend.loop", "retrain", "--gate", "enabled", "--worker", "2"])


def test_the_evening_job_runs_in_exchange_time_on_the_latest_bars_and_the_search_promotes_through_the_gate():
    cron = _by_kind("CronJob")[0]
    assert cron["spec"]["timeZone"] == "America/New_York"
    script = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "--as-of latest" in script and "--kept-exit-code 0" in script and "$(date" not in script
    config = _by_kind("ConfigMap")[0]["data"]
    assert config["STOCKTREND_DATA"].startswith("/data/")
    job = _by_kind("RayJob")[0]["spec"]["entrypoint"]
    assert job.startswith("python -m stocktrend tune ") and "--promote" in job  # the CLI's gated door
