#!/usr/bin/env python3
"""Sanity checks for raycluster.json / rayjob.json / rayservice.json (needs jsonschema).

Run from anywhere: python deploy/k8s/schemas/tools/check_schemas.py ; exit status 0 = all checks pass.
"""
import copy
import json
import os
import sys

import jsonschema

D = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(kind):
    doc = json.load(open(os.path.join(D, kind + ".json")))
    jsonschema.Draft7Validator.check_schema(doc["schema"])
    return doc, jsonschema.Draft7Validator(doc["schema"])


tmpl = {"spec": {"containers": []}}
RAYJOB = {  # the project's RayJob shape
    "apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "x"},
    "spec": {"entrypoint": "python -m x", "shutdownAfterJobFinishes": True,
             "ttlSecondsAfterFinished": 600, "activeDeadlineSeconds": 14400, "backoffLimit": 0,
             "rayClusterSpec": {
                 "rayVersion": "2.60.0", "enableInTreeAutoscaling": True,
                 "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": tmpl},
                 "workerGroupSpecs": [{"groupName": "cpu", "replicas": 2, "minReplicas": 1,
                                       "maxReplicas": 4, "rayStartParams": {}, "template": tmpl}]}}}
RAYSERVICE = {
    "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "serve"},
    "spec": {"upgradeStrategy": {"type": "NewCluster"},
             "serveConfigV2": "applications:\n- name: app\n  import_path: m:app\n",
             "rayClusterConfig": copy.deepcopy(RAYJOB["spec"]["rayClusterSpec"])}}
RAYCLUSTER = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"},
              "spec": copy.deepcopy(RAYJOB["spec"]["rayClusterSpec"])}


def bad(doc, mutate):
    d = copy.deepcopy(doc)
    mutate(d)
    return d


def rename(key, new):
    return lambda d: d["spec"].update({new: d["spec"].pop(key)})


def main():
    (jd, vj), (sd, vs), (cd, vc) = load("rayjob"), load("rayservice"), load("raycluster")
    rjs = RAYJOB["spec"]
    cases = [
        ("RayJob (project shape) valid", vj, RAYJOB, True),
        ("RayJob typo entrypoit", vj, bad(RAYJOB, rename("entrypoint", "entrypoit")), False),
        ("RayJob typo backofLimit", vj, bad(RAYJOB, rename("backoffLimit", "backofLimit")), False),
        ("RayJob typo activeDeadlineSecond", vj,
         bad(RAYJOB, rename("activeDeadlineSeconds", "activeDeadlineSecond")), False),
        ("RayJob typo worker maxReplica", vj,
         bad(RAYJOB, lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(maxReplica=3)), False),
        ("RayJob backoffLimit as string", vj, bad(RAYJOB, lambda d: d["spec"].update(backoffLimit="0")), False),
        ("RayJob rayStartParams value not a string", vj,
         bad(RAYJOB, lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update(
             {"num-cpus": 0})), False),
        ("RayJob worker group without groupName", vj,
         bad(RAYJOB, lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName")), False),
        ("RayJob submissionMode/submitterConfig/deletionStrategy/suspend", vj,
         bad(RAYJOB, lambda d: d["spec"].update(
             submissionMode="HTTPMode", submitterConfig={"backoffLimit": 1}, suspend=False,
             deletionStrategy={"deletionRules": [{"policy": "DeleteCluster",
                                                  "condition": {"jobStatus": "FAILED", "ttlSeconds": 60}}]})),
         True),
        ("RayJob deletion policy enum typo", vj,
         bad(RAYJOB, lambda d: d["spec"].update(
             deletionStrategy={"onSuccess": {"policy": "DeleteClusters"}, "onFailure": {"policy": "DeleteNone"}})),
         False),
        ("RayJob with submitterPodTemplate (placeholder object)", vj,
         bad(RAYJOB, lambda d: d["spec"].update(submitterPodTemplate=tmpl)), True),
        ("RayJob wrong kind", vj, bad(RAYJOB, lambda d: d.update(kind="RayCluster")), False),
        ("RayJob apiVersion v1alpha1", vj, bad(RAYJOB, lambda d: d.update(apiVersion="ray.io/v1alpha1")), False),
        ("RayJob fork-only dashboardTlsServerName rejected", vj,
         bad(RAYJOB, lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"].update(
             dashboardTlsServerName="x")), False),
        ("RayService (upgradeStrategy NewCluster) valid", vs, RAYSERVICE, True),
        ("RayService incremental upgrade options valid", vs,
         bad(RAYSERVICE, lambda d: d["spec"].update(upgradeStrategy={
             "type": "NewClusterWithIncrementalUpgrade",
             "clusterUpgradeOptions": {"gatewayClassName": "istio", "maxSurgePercent": 20,
                                       "stepSizePercent": 5, "intervalSeconds": 10}})), True),
        ("RayService typo upgradeStrategy.typ", vs,
         bad(RAYSERVICE, lambda d: d["spec"].update(upgradeStrategy={"typ": "NewCluster"})), False),
        ("RayService typo serveConfigv2", vs, bad(RAYSERVICE, rename("serveConfigV2", "serveConfigv2")), False),
        ("RayService serveConfigV2 not a string", vs,
         bad(RAYSERVICE, lambda d: d["spec"].update(serveConfigV2={"applications": []})), False),
        ("RayService missing rayClusterConfig", vs, bad(RAYSERVICE, lambda d: d["spec"].pop("rayClusterConfig")),
         False),
        ("RayCluster valid", vc, RAYCLUSTER, True),
        ("RayCluster typo headGroupSpec.rayStartParam", vc,
         bad(RAYCLUSTER, lambda d: d["spec"]["headGroupSpec"].update(rayStartParam={})), False),
        ("RayCluster missing headGroupSpec", vc, bad(RAYCLUSTER, lambda d: d["spec"].pop("headGroupSpec")), False),
        ("RayCluster bad upscalingMode enum", vc,
         bad(RAYCLUSTER, lambda d: d["spec"].update(autoscalerOptions={"upscalingMode": "Fast"})), False),
        ("RayCluster authOptions token + autoscaler v2", vc,
         bad(RAYCLUSTER, lambda d: d["spec"].update(authOptions={"mode": "token"},
                                                    autoscalerOptions={"version": "v2"})), True),
    ]
    ok = True
    for name, v, doc, expect_valid in cases:
        errs = sorted(e.message for e in v.iter_errors(doc))
        good = (not errs) == expect_valid
        ok &= good
        print(f"{'PASS' if good else 'FAIL'}: {name}: {'valid' if not errs else errs[0]}")
    # the three files must carry the same RayClusterSpec schema
    c = cd["schema"]["properties"]["spec"]
    same = (c == jd["schema"]["properties"]["spec"]["properties"]["rayClusterSpec"]
            == sd["schema"]["properties"]["spec"]["properties"]["rayClusterConfig"])
    ok &= same
    print(f"{'PASS' if same else 'FAIL'}: RayClusterSpec identical in raycluster/rayjob/rayservice")
    print("ALL OK" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
