"""``stocktrend k8s render``: the KubeRay manifests under deploy/k8s, generated from code and serve_config.yaml."""

from __future__ import annotations

from typing import Optional

import typer

from stocktrend.cli.common import app

k8s_app = typer.Typer(no_args_is_help=True, help="Kubernetes (KubeRay) manifests.")
app.add_typer(k8s_app, name="k8s")


@k8s_app.command("render")
def render_cmd(
    out: str = typer.Option("deploy/k8s", "--out", help="Folder to write the manifests to."),
    serve_config: str = typer.Option("serve_config.yaml", "--serve-config", help="The Serve config that becomes the "
                                     "RayService's serveConfigV2."),
    image: Optional[str] = typer.Option(None, "--image", help="Container image (default ghcr.io/your-org/"
                                        "stocktrend:0.1.0; build it with the Dockerfile)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="STOCKTREND_STORAGE in the ConfigMap: where "
                                          "checkpoints go, every pod reaches it (default "
                                          "s3://your-bucket/stocktrend)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLFLOW_TRACKING_URI in the ConfigMap "
                                               "(default http://mlflow.stocktrend.svc:5000)."),
) -> None:
    """Write configmap, secret, pvc, rayjob-search, rayservice, raycluster-loop and cronjob-evening YAML files."""
    from pathlib import Path

    from stocktrend.serve.k8s import IMAGE, KUBERAY_VERSION, STORAGE, TRACKING_URI, render
    if not Path(serve_config).is_file():
        raise typer.BadParameter(f"{serve_config}: no such file", param_hint="--serve-config")
    for p in render(Path(out), Path(serve_config), image or IMAGE, storage or STORAGE, tracking_uri or TRACKING_URI):
        typer.echo(f"wrote {p}")
    typer.echo(f"targets KubeRay {KUBERAY_VERSION}: kubectl apply -f {out}/")
