#!/usr/bin/env python3
"""Build the compact JSON Schemas raycluster.json / rayjob.json / rayservice.json from KubeRay CRD YAML.

Input: the CRD files ray.io_rayjobs.yaml and ray.io_rayservices.yaml (and, optionally,
ray.io_rayclusters.yaml), either the full files as shipped by KubeRay (Helm chart `crds/` or
`ray-operator/config/crd/bases/`) or the excerpts in `source/` (same text, pod templates cut out).
Without --rayclusters the RayCluster schema is built from the RayJob CRD's spec.rayClusterSpec,
which is the same Go type (RayClusterSpec) and therefore the same generated schema.

Derivation (identical to the previous generation of these files):
  * take spec.versions[name=v1].schema.openAPIV3Schema.properties.spec;
  * keep type/properties/required/items/enum/additionalProperties/anyOf/pattern and length/numeric
    bounds; drop descriptions, format, default, nullable, x-kubernetes-* list/map markers and CEL
    rules (x-kubernetes-validations);
  * replace every pod template (a Kubernetes PodTemplateSpec, ~200 kB of schema each) by
    {"type": "object", "x-stocktrend-validated-as": "PodTemplateSpec"}; the paths are listed in
    "replaced_paths" -- validate those parts separately as PodTemplateSpec;
  * add additionalProperties: false to every object schema that has properties and is not
    x-kubernetes-preserve-unknown-fields, so that a misspelled field is rejected;
  * remove the fields listed in DROP if present (fields that only exist in the fork the source was
    taken from; absent from upstream KubeRay, see README.md).

Usage (from deploy/k8s/schemas/):
  python tools/kuberay_crd_to_schema.py --rayjobs tools/source/ray.io_rayjobs.excerpt.yaml \
      --rayservices tools/source/ray.io_rayservices.excerpt.yaml --out-dir .
Needs PyYAML. Then run tools/check_schemas.py.
"""
import argparse
import json
import os

import yaml

KEEP = {"type", "properties", "required", "items", "enum", "additionalProperties", "anyOf",
        "pattern", "maxLength", "minLength", "minimum", "maximum", "maxItems", "minItems",
        "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"}
PLACEHOLDER = {"type": "object", "x-stocktrend-validated-as": "PodTemplateSpec"}

POD_TEMPLATES = {
    "RayCluster": ["spec.headGroupSpec.template", "spec.workerGroupSpecs[].template"],
    "RayJob": ["spec.rayClusterSpec.headGroupSpec.template",
               "spec.rayClusterSpec.workerGroupSpecs[].template", "spec.submitterPodTemplate"],
    "RayService": ["spec.rayClusterConfig.headGroupSpec.template",
                   "spec.rayClusterConfig.workerGroupSpecs[].template"],
}
# Fork-only fields of DataDog/kuberay (not in upstream ray-project/kuberay); removed when present.
DROP = {
    "RayCluster": ["spec.headGroupSpec.dashboardTlsServerName"],
    "RayJob": ["spec.rayClusterSpec.headGroupSpec.dashboardTlsServerName"],
    "RayService": ["spec.rayClusterConfig.headGroupSpec.dashboardTlsServerName",
                   "spec.upgradeStrategy.clusterUpgradeOptions.skipGateway"],
}
OUT = {"RayCluster": "raycluster.json", "RayJob": "rayjob.json", "RayService": "rayservice.json"}


def v1_spec(crd_path):
    crd = yaml.safe_load(open(crd_path))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]["properties"]["spec"]


def transform(node, path, replace, drop, replaced, dropped):
    if path in replace:
        replaced.append(path)
        return dict(PLACEHOLDER)
    out = {}
    for k, v in node.items():
        if k not in KEEP:
            continue
        if k == "properties":
            out[k] = {}
            for name, sub in v.items():
                sub_path = f"{path}.{name}"
                if sub_path in drop:
                    dropped.append(sub_path)
                    continue
                out[k][name] = transform(sub, sub_path, replace, drop, replaced, dropped)
        elif k == "items":
            out[k] = transform(v, f"{path}[]", replace, drop, replaced, dropped)
        elif k == "additionalProperties" and isinstance(v, dict):
            out[k] = transform(v, f"{path}{{*}}", replace, drop, replaced, dropped)
        elif k == "anyOf":
            out[k] = [transform(x, path, replace, drop, replaced, dropped) for x in v]
        else:
            out[k] = v
    if "required" in out and "properties" in out:
        out["required"] = [r for r in out["required"] if r in out["properties"]]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def build(kind, spec_node):
    replaced, dropped = [], []
    spec = transform(spec_node, "spec", set(POD_TEMPLATES[kind]), set(DROP[kind]), replaced, dropped)
    missing = set(POD_TEMPLATES[kind]) - set(replaced)
    assert not missing, f"{kind}: pod template paths not found: {missing}"
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"{kind} (ray.io/v1)",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string", "const": "ray.io/v1"},
            "kind": {"type": "string", "const": kind},
            "metadata": {"type": "object"},
            "spec": spec,
        },
        "additionalProperties": False,
    }
    return schema, replaced, dropped


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rayjobs", required=True)
    ap.add_argument("--rayservices", required=True)
    ap.add_argument("--rayclusters", help="optional; default: spec.rayClusterSpec of --rayjobs")
    ap.add_argument("--provenance", default=os.path.join(here, "provenance.json"),
                    help="JSON {kind: source description} used as the start of each $comment")
    ap.add_argument("--out-dir", default=os.path.dirname(here))
    a = ap.parse_args()
    prov = json.load(open(a.provenance))
    rayjob_spec = v1_spec(a.rayjobs)
    specs = {
        "RayJob": rayjob_spec,
        "RayService": v1_spec(a.rayservices),
        "RayCluster": v1_spec(a.rayclusters) if a.rayclusters
        else rayjob_spec["properties"]["rayClusterSpec"],
    }
    for kind in ("RayCluster", "RayJob", "RayService"):
        schema, replaced, dropped = build(kind, specs[kind])
        comment = (prov[kind] + " Derivation (tools/kuberay_crd_to_schema.py): "
                   "spec.versions[name=v1].schema.openAPIV3Schema.properties.spec, keeping "
                   "type/properties/required/items/enum/additionalProperties/anyOf/pattern/length and "
                   "numeric bounds; descriptions, format, default, nullable, x-kubernetes-list/map "
                   "markers and x-kubernetes-validations (CEL) dropped; pod templates replaced by "
                   "placeholders (see replaced_paths; validate them separately as PodTemplateSpec); "
                   "additionalProperties=false added to every object schema with properties that is "
                   "neither a map nor x-kubernetes-preserve-unknown-fields.")
        if dropped:
            comment += " Fork-only fields removed: " + ", ".join(dropped) + "."
        comment += " Licence: Apache-2.0 (KubeRay LICENSE); this file is a modified derivative."
        doc = {"$comment": comment, "replaced_paths": replaced, "schema": schema}
        out = os.path.join(a.out_dir, OUT[kind])
        with open(out, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"{out}: spec fields {sorted(schema['properties']['spec']['properties'])}; "
              f"replaced {replaced}; dropped {dropped}")


if __name__ == "__main__":
    main()
