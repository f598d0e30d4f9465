"""The ``stocktrend`` command. Thin: parses flags, calls library functions, prints summaries.

Errors a user can fix (bad files, unknown tickers, impossible configs) are printed as one ``error:`` line with exit
code 2, never as a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys

import typer

# Importing them registers the commands (run first in --help).
from stocktrend.cli import run, tune, loop, models, data, k8s, monitoring  # noqa: F401,I001
from stocktrend.cli.common import STATE, app


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    # The platform's user errors (DataValidationError, CheckpointError, RegistryError: ValueErrors;
    # DistributedTrainingError: a RuntimeError) are caught by their bases, so that nothing heavy (torch, Lightning)
    # is imported before the command needs it.
    try:
        app(args=argv, prog_name=prog_name)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if STATE["debug"]:
            raise
        from stocktrend.platform import console
        typer.echo(f"error: {exc}{console.where()}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
