"""`hms eval`: measure HMS on datasets with known answers."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from hms_jobs.cli import main


@main.group("eval")
def eval_group() -> None:
    """Measure HMS on datasets with known answers."""


def _budgets(_ctx, _param, value: str) -> tuple[int, ...]:
    try:
        budgets = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated token counts, got {value!r}") from None
    if not budgets or min(budgets) < 1:
        raise click.BadParameter(f"budgets must be positive, got {value!r}")
    return budgets


@eval_group.command("retrieval")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--budgets", default="256,512,1024,2048", show_default=True, callback=_budgets, help="Token budgets.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@click.option("--folds", type=click.IntRange(min=0), default=0, show_default=True, help="Cross-validate the reranker: fit it on the other folds' users for each fold (0: use the configured one).")
@click.option("--filler", type=click.IntRange(min=0), default=0, show_default=True, help="Add this many captured chat exchanges of assistant filler per user (never evidence): what captured replies cost.")
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: when stderr is a terminal).")
def eval_retrieval(data: str, budgets: tuple[int, ...], json_out: str | None, folds: int, filler: int, progress: bool | None) -> None:
    """Evidence recall and latency of the context resource on DATA (JSON Lines of memories and
    questions), against BM25-only, dense-only and hybrid baselines, in a fresh temporary HMS home."""
    from hms_jobs.retrieval_harness import evaluate_retrieval, format_report
    from hms_resources.common.environment import environment_fields
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.datasets.retrieval_eval import DatasetError

    show = sys.stderr.isatty() if progress is None else progress
    try:
        result = evaluate_retrieval(data, budgets, tokenizer=environment_fields(ContextAssembler).get("tokenizer", ""), folds=folds, filler=filler, progress=show, log=lambda m: click.echo(m, err=True))
    except DatasetError:
        raise
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(format_report(result))
    if json_out:
        Path(json_out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"wrote {json_out}", err=True)


@eval_group.command("fit-reranker")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Where to write the reranker (JSON); point HMS_CONTEXT_RERANKER at it.")
@click.option("--filler", type=click.IntRange(min=0), default=0, show_default=True, help="Add this many captured chat exchanges of assistant filler per user (never evidence): what captured replies cost.")
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: when stderr is a terminal).")
def eval_fit_reranker(data: str, out: str, filler: int, progress: bool | None) -> None:
    """Fit the context reranker on every question of DATA (the format of `hms eval retrieval`).
    Measure it first with `hms eval retrieval DATA --folds K`: a fit is only as good as its held-out figures."""
    from hms_jobs.retrieval_harness import fit_reranker_file
    from hms_resources.common.environment import environment_fields
    from hms_resources.context.assembler import ContextAssembler

    show = sys.stderr.isatty() if progress is None else progress
    fit_reranker_file(data, out, tokenizer=environment_fields(ContextAssembler).get("tokenizer", ""), filler=filler, progress=show, log=lambda m: click.echo(m, err=True))
