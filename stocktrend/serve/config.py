"""The endpoint's settings: the replica's user_config defaults, the app_builder args, and a serve-config check that
catches what Ray's own schema lets through."""
from typing import Any

from stocktrend.platform.registry import BACKENDS  # noqa: F401  (re-exported for the CLI and the app)

DEFAULT_USER_CONFIG: dict[str, Any] = {
    "model": "stocktrend@production",  # NAME@ALIAS, NAME@VERSION or a checkpoint path
    "poll_interval_s": 5.0,  # alias polling for hot swaps (0 = off)
    "max_batch_size": 16,  # @serve.batch: requests already on the replica share one model call (2 batches at once)
    "batch_wait_timeout_s": 0.0,  # no wait for more: a batch is what has arrived (bench/peers/serving.py)
    "max_items": 256,  # windows per /predict request
    "max_history_days": 5000,  # bars per /predict/ticker request
    "backend": "onnx",  # torch | torch-bf16 | onnx | onnx-int8 (stocktrend.platform.registry.inference; falls back to torch)
    "challenger": "",  # NAME@ALIAS or NAME@VERSION of a challenger deployment ("" = none; set at build time)
    "challenger_routes": "all",  # all | ticker (a challenger with other inputs answers /predict/ticker only)
    "challenger_split": 0.0,  # share of requests the challenger answers, sticky per key (stocktrend.serve.routing)
    "shadow": False,  # the champion answers everything; the challenger gets a copy off the request path
    "challenger_timeout_s": 5.0,  # a slower challenger answer is a failure: the client gets the champion's
    "shadow_queue": 64,  # shadow copies in flight at most; more are dropped (counted)
    "drift_window": 2000,  # served rows behind the drift gauges
}


BUILDER_ARGS = {*DEFAULT_USER_CONFIG, "min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s",
                "downscale_delay_s", "look_back_period_s", "max_ongoing_requests", "max_queued_requests", "num_cpus",
                "env_vars", "challenger_num_cpus"}


def validate_serve_config(cfg: dict[str, Any]) -> None:
    """Ray's ServeDeploySchema plus what it lets through: unknown keys at any level (Ray accepts them silently) and
    unknown app_builder args. Raises ValueError naming the bad key."""
    from ray.serve.schema import HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema
    ServeDeploySchema.model_validate(cfg)
    for where, keys, model in (("top level", cfg, ServeDeploySchema),
                               ("http_options", cfg.get("http_options", {}), HTTPOptionsSchema),
                               *((f"application {a.get('name')}", a, ServeApplicationSchema)
                                 for a in cfg.get("applications", []))):
        unknown = set(keys) - set(model.model_fields)
        if unknown:
            raise ValueError(f"serve config {where}: unknown key(s) {', '.join(sorted(unknown))}")
    for a in cfg.get("applications", []):
        if a.get("import_path") == "stocktrend.serve.app:app_builder":
            unknown = set(a.get("args", {})) - BUILDER_ARGS
            if unknown:
                raise ValueError(f"serve config application {a.get('name')}: unknown arg(s) "
                                 f"{', '.join(sorted(unknown))}")
