"""`hms`: ingest events, look at the store, and run HMS's Dagster jobs from a terminal.

One module per command group: `store` (ingest, stats, forget, generate, migrate, instance), `run`
(run, ui), `lora` (curate, lora), `eval` (eval retrieval), `serve` (serve, mcp, keys) and `worker` (a Celery worker); each registers its commands on `main`."""

from __future__ import annotations

import click

from hms_resources.common.home import redact_url

EXIT_OK, EXIT_FAILURE, EXIT_REJECTED = 0, 1, 2


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI's last line: say what failed, exit 1
            click.echo(f"hms: error: {redact_url(str(exc))}", err=True)
            ctx.exit(EXIT_FAILURE)


@click.group(cls=_Cli)
def main() -> None:
    """HMS, the hierarchical memory system. The store lives under $HMS_HOME (default ./.hms),
    or in PostgreSQL when $HMS_DATABASE_URL is set."""


from hms_jobs.cli import chat, eval, lora, run, serve, store, worker  # noqa: E402, F401 - each registers its commands on `main`
