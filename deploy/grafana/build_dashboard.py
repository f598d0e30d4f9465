"""Writes deploy/grafana/stocktrend.json, the Grafana dashboard of a stocktrend endpoint (classic dashboard JSON model,
importable as is: Dashboards > New > Import). Run after changing a panel: python deploy/grafana/build_dashboard.py
(tests/serve/test_monitoring.py checks that the committed file is what this writes, that every query parses and that
every metric it names is exported by a running endpoint)."""

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
M = 'model=~"$model"'
PANELS = [
    ("Requests by version and role (req/s)", "timeseries", "reqps", [
        (f"sum by (version, role) (rate(ray_stocktrend_requests_total{{{M}}}[5m]))", "v{{version}} {{role}}")]),
    ("Errors (model failures by version and role; HTTP 5xx)", "timeseries", "reqps", [
        (f"sum by (version, role) (rate(ray_stocktrend_request_errors_total{{{M}}}[5m]))", "v{{version}} {{role}}"),
        ('sum by (status_code) (rate(ray_serve_num_http_requests_total{application="stocktrend",'
         'status_code=~"5.."}[5m]))', "HTTP {{status_code}}")]),
    ("Latency p50 / p99 by answering version (ms, in the replica)", "timeseries", "ms", [
        (f"histogram_quantile(0.5, sum by (le, version, role) (rate(ray_stocktrend_request_latency_ms_bucket{{{M}}}"
         f"[5m])))", "p50 v{{version}} {{role}}"),
        (f"histogram_quantile(0.99, sum by (le, version, role) (rate(ray_stocktrend_request_latency_ms_bucket{{{M}}}"
         f"[5m])))", "p99 v{{version}} {{role}}")]),
    ("HTTP latency p50 / p99 at the ingress (ms)", "timeseries", "ms", [
        ('histogram_quantile(0.5, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket{application="stocktrend"}'
         '[5m])))', "p50"),
        ('histogram_quantile(0.99, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket{application="stocktrend"}'
         '[5m])))', "p99")]),
    ("Class mix of predictions (share)", "timeseries", "percentunit", [
        (f"sum by (label) (rate(ray_stocktrend_predictions_total{{{M}}}[15m])) / ignoring (label) group_left "
         f"sum(rate(ray_stocktrend_predictions_total{{{M}}}[15m]))", "{{label}}")]),
    ("Class-mix shift against validation (pp; alert above 10)", "timeseries", "none", [
        (f"max by (version, role) (ray_stocktrend_class_mix_shift_pp{{{M}}})", "v{{version}} {{role}}")]),
    ("Mean confidence, served window and validation (alert 10 points below validation)", "timeseries",
     "percentunit", [
        (f"avg by (version, role) (ray_stocktrend_mean_confidence{{{M}}})", "v{{version}} {{role}}"),
        (f"avg by (version, role) (ray_stocktrend_reference_confidence{{{M}}})", "v{{version}} {{role}} validation")]),
    ("Feature drift: largest input PSIs (0.1 moderate, 0.25 significant)", "timeseries", "none", [
        (f"topk(10, max by (feature, version) (ray_stocktrend_feature_psi{{{M}}}))", "{{feature}} v{{version}}"),
        (f"max by (version, role) (ray_stocktrend_feature_psi_max{{{M}}})", "max v{{version}} {{role}}")]),
    ("Challenger share of traffic", "timeseries", "percentunit", [
        (f"max by (model) (ray_stocktrend_challenger_share{{{M}}})", "{{model}}")]),
    ("Shadow agreement (challenger label = champion label) and dropped copies", "timeseries", "percentunit", [
        (f"avg by (champion_version, challenger_version) (ray_stocktrend_shadow_agreement{{{M}}})",
         "v{{champion_version}} vs v{{challenger_version}}"),
        (f"sum (rate(ray_stocktrend_shadow_dropped_total{{{M}}}[5m]))", "dropped/s")]),
    ("Replicas by served version, role and backend", "timeseries", "none", [
        (f"sum by (version, role, backend) (ray_stocktrend_model_version{{{M}}})",
         "v{{version}} {{role}} {{backend}}")]),
    ("Healthy replicas", "timeseries", "none", [
        ('sum by (deployment) (ray_serve_deployment_replica_healthy{application="stocktrend"})', "{{deployment}}")]),
]


def dashboard() -> dict:
    panels = []
    for i, (title, kind, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": kind, "title": title, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(65 + j), "datasource": DS, "expr": expr, "legendFormat": legend}
                        for j, (expr, legend) in enumerate(targets)]})
    return {
        "uid": "stocktrend-endpoint", "title": "stocktrend / endpoint", "tags": ["stocktrend", "ray-serve"],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "annotations": {"list": []}, "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "options": [], "regex": ""},
            {"name": "model", "label": "Model", "type": "query", "datasource": DS,
             "query": "label_values(ray_stocktrend_model_version, model)", "refresh": 2, "includeAll": True,
             "multi": True, "current": {}, "options": [], "regex": "", "sort": 1}]},
        "panels": panels}


def main() -> None:
    path = Path(__file__).with_name("stocktrend.json")
    path.write_text(json.dumps(dashboard(), indent=1) + "\n")
    print(f"wrote {path} ({len(PANELS)} panels)")


if __name__ == "__main__":
    main()
