"""`hms curate` and `hms lora`: decide which memories LoRA adapters learn, train them, and manage the registry."""

from __future__ import annotations

import sys

import click
import orjson

from hms_jobs.cli import EXIT_FAILURE, EXIT_OK, main
from hms_jobs.cli.run import RunReport, print_comparison, run_jobs
from hms_jobs.cli.store import open_store
from hms_jobs.cli.users import known_user, tenant_option
from hms_resources.common.home import hms_home
from hms_resources.lora.candidates import CURATION_ACTIONS


@main.group()
def curate() -> None:
    """Approve or reject LoRA candidate sets and memories ($HMS_HOME/curation.json). Nothing trains on
    a rejected memory or set; an approved set is trained by the next `lora_job` run."""


@curate.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def curate_list(as_json: bool) -> None:
    """The candidate sets of the last `lora_candidate_sets` run, with their status under today's curation."""
    from hms_resources.lora.adapters import lora_dir
    from hms_resources.lora.candidates import load_candidate_sets, load_curation

    home = hms_home()
    curation = load_curation(home)
    sets = [{"set_id": s.set_id, "status": curation.set_status(s.set_id), "memories": len(s.memory_ids), "label": s.label[:5],
             "memory_ids": s.memory_ids, "left_out": s.left_out} for s in load_candidate_sets(lora_dir(home))]
    if as_json:
        click.echo(orjson.dumps({"sets": sets, "rejected_memories": sorted(map(list, curation.rejected_memories)),
                                 "approved_memories": sorted(map(list, curation.approved_memories))}).decode())
        return
    if not sets:
        click.echo("no candidate sets yet: run `hms run` or the lora_job")
    for s in sets:
        click.echo(f"{s['status']:<9} {s['set_id']}  {s['memories']} memories  [{', '.join(s['label'][:3])}]")


def _curation_command(action: str):
    @click.argument("set_ids", nargs=-1)
    @click.option("--memory", "memories", type=(str, str), multiple=True, metavar="USER MEMORY", help="A memory instead of, or beside, sets (USER as the API names the tenant's user).")
    @tenant_option
    def command(set_ids: tuple[str, ...], memories: tuple[tuple[str, str], ...], tenant: str) -> None:
        from hms_resources.lora.adapters import lora_dir
        from hms_resources.lora.candidates import curate as apply_curation
        from hms_resources.lora.candidates import load_candidate_sets, load_curation, save_curation

        if not set_ids and not memories:
            raise click.UsageError("name at least one set id or --memory USER MEMORY")
        home = hms_home()
        known = {s.set_id for s in load_candidate_sets(lora_dir(home))}
        unknown = [s for s in set_ids if s not in known]
        if unknown:
            raise click.ClickException(f"no candidate set {', '.join(map(repr, unknown))} in {lora_dir(home)}; `hms curate list` shows them")
        keys = []
        if memories:
            store = open_store()
            try:
                keys = [(known_user(store, tenant, user, "--memory"), memory) for user, memory in memories]
                stored = store.memory_statuses(keys)
            finally:
                store.close()
            missing = [f"{u}/{m}" for (u, m), key in zip(memories, keys) if key not in stored]
            if missing:
                raise click.ClickException(f"no memory {', '.join(missing)} in the store")
        path = save_curation(home, apply_curation(load_curation(home), action, list(set_ids), keys))
        click.echo(f"{action}: {len(set_ids)} set(s), {len(memories)} memory(ies) in {path}; the next lora_job run applies it")

    command.__doc__ = {
        "approve": "Approve candidate sets (and memories) for training.",
        "reject": "Reject candidate sets (and memories): nothing trains on them.",
        "reset": "Take back the decision on sets (and memories).",
    }[action]
    return curate.command(action)(command)


for _action in CURATION_ACTIONS:
    _curation_command(_action)


@main.group()
def lora() -> None:
    """LoRA adapters: train them, list the registry, compare, roll back a champion."""


@lora.command("train")
def lora_train() -> None:
    """Run `lora_job` now: select sets, build the approved ones' datasets, train, register, compare."""
    report = RunReport()
    success = run_jobs([("lora_job", None)], report)
    print_comparison(report)
    sys.exit(EXIT_OK if success else EXIT_FAILURE)


@lora.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def lora_list(as_json: bool) -> None:
    """Every set's registered versions, their aliases, paraphrase recall and promotion-gate verdict."""
    from hms_resources.lora.registry import registered_models

    client = _tracking_client()
    models = registered_models(client)
    if as_json:
        click.echo(orjson.dumps(models).decode())
        return
    if not models:
        click.echo("no registered adapter yet")
    for model in models:
        click.echo(f"{model['set_id']} ({model['name']})")
        for v in model["versions"]:
            recall = "-" if v["paraphrase_recall"] is None else f"{v['paraphrase_recall']:.3f}"
            click.echo(f"  version {v['version']:<3} {', '.join(v['aliases']) or '-':<22} paraphrase recall {recall:<5}  "
                       f"run {v['run_id']}  gate {v['gate'] or 'not evaluated'}")


@lora.command("compare")
def lora_compare() -> None:
    """The latest adapter comparison: the base and every registered adapter on each set's probes."""
    from hms_resources.lora.adapters import comparison_rows, format_comparison

    click.echo(format_comparison(comparison_rows(hms_home())))


@lora.command("rollback")
@click.argument("set_id")
@click.option("--version", default=None, help="The version to make champion [default: the one the champion replaced].")
@click.option("--force", is_flag=True, help="Roll back even to a version that failed or never met the promotion gate.")
def lora_rollback(set_id: str, version: str | None, force: bool) -> None:
    """Make an earlier version of SET_ID's adapter the champion again; the context resource follows.
    A version that did not pass the promotion gate is refused unless --force."""
    from hms_resources.lora.adapters import publish_champions
    from hms_resources.lora.registry import CHAMPION, alias_version, rollback

    client = _tracking_client()
    before = alias_version(client, set_id, CHAMPION)
    try:
        target = rollback(client, set_id, version, force=force)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    publish_champions(client, hms_home())
    click.echo(f"{set_id}: champion is version {target} (was {before.version if before is not None else 'none'})")


def _tracking_client():
    from hms_resources.lora.tracking import MlflowTracking

    tracking = MlflowTracking.from_env()
    tracking.experiment_id(hms_home())
    return tracking.client(hms_home())
