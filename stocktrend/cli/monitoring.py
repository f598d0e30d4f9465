"""``stocktrend monitoring up``: a local Prometheus + Alertmanager beside ``stocktrend serve`` (stocktrend.serve.stack)."""

from __future__ import annotations

from typing import Optional

import typer

from stocktrend.cli.common import app

monitoring_app = typer.Typer(no_args_is_help=True, help="A local Prometheus and Alertmanager for the endpoint.")
app.add_typer(monitoring_app, name="monitoring")


@monitoring_app.command("up")
def up_cmd(
    prometheus_port: int = typer.Option(9090, "--prometheus-port", help="Prometheus on 127.0.0.1:PORT."),
    alertmanager_port: int = typer.Option(9093, "--alertmanager-port", help="Alertmanager on 127.0.0.1:PORT."),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="Where Alertmanager posts alerts (a webhook "
                                          "receiver URL: a chat bridge, an incident tool); none: they are held."),
    rules: Optional[str] = typer.Option(None, "--rules", help="Alert rule file (default the package's own, "
                                        "stocktrend/serve/assets/alerts.yml, linked as deploy/prometheus/alerts.yml)."),
    sd_file: str = typer.Option("/tmp/ray/prom_metrics_service_discovery.json", "--sd-file",
                                help="Ray's service-discovery file: every node's metrics port (written by the head)."),
    scrape_interval: str = typer.Option("15s", "--scrape-interval", help="How often Prometheus scrapes and "
                                        "evaluates the rules."),
) -> None:
    """Start Prometheus (scraping Ray's metrics ports, evaluating the alert rules) and Alertmanager on 127.0.0.1,
    data under $STOCKTREND_HOME/monitoring; both stop on Ctrl-C (or SIGTERM)."""
    import signal
    import time
    from pathlib import Path

    from stocktrend.platform.data.cache import default_home
    from stocktrend.serve import stack as st
    rule_file = Path(rules) if rules else st.RULES
    if not rule_file.is_file():
        raise ValueError(f"no alert rule file at {rule_file}: pass --rules FILE")
    if not Path(sd_file).exists():
        typer.echo(f"note         : {sd_file} does not exist yet: Prometheus starts scraping when a Ray instance "
                   f"writes it (start `stocktrend serve`)")

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    from stocktrend.loop import textfile
    stack = st.start(default_home(), prometheus_port, alertmanager_port, webhook, rule_file, Path(sd_file),
                     scrape_interval, scrape_interval, textfile_dir=textfile.folder(default_home()))
    try:
        for line in stack.reaped:
            typer.echo(f"note         : {line}")
        typer.echo(f"prometheus   : {stack.prometheus_url} (alerts: {stack.prometheus_url}/alerts; rules {rule_file})")
        where = f"posts to {webhook}" if webhook else "no webhook: alerts are held, see its page"
        typer.echo(f"alertmanager : {stack.alertmanager_url} ({where})")
        typer.echo(f"data         : {stack.folder} (Ctrl-C stops both)")
        while all(p.poll() is None for p in stack.procs):
            time.sleep(1)
        raise ValueError(f"a monitoring server exited (logs in {stack.folder})")
    except KeyboardInterrupt:
        typer.echo("stopping Prometheus and Alertmanager")
    finally:
        stack.stop()
    typer.echo("stopped")
