"""`hms ingest`, `stats`, `forget`, `generate`, `migrate` and `instance`: the event store and the Dagster instance."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import orjson

from hms_jobs.cli import EXIT_OK, EXIT_REJECTED, main
from hms_jobs.cli.users import api_name, known_user, tenant_names, tenant_option
from hms_resources.common.home import hms_home
from hms_resources.store.database import migrate
from hms_resources.store.event_store import EventStore
from hms_resources.store.events import DEFAULT_MAX_CONTENT_BYTES
from hms_resources.store.ingest import DEFAULT_BATCH_SIZE, IngestReport, default_rejects_path


def open_store(max_content_bytes: int | None = None) -> EventStore:
    """The store the environment names; `--max-content-bytes` overrides the environment's limit."""
    store = EventStore.from_env()
    if max_content_bytes is not None:
        store = EventStore(
            database_url=store.database_url, hms_home=store.hms_home, max_content_bytes=max_content_bytes
        )
    return store


def ingest_file(path: str, *, rejects: str | None, batch_size: int, max_content_bytes: int | None, progress: bool | None, tenant: str) -> IngestReport:
    """Ingest as `hms ingest` and `hms run` both do: the users under `tenant` (`''`: ids as written), a
    progress bar, and every rejected line on stderr."""
    from tqdm import tqdm

    from hms_resources.memory.writes import MemoryWriter

    tenant_names(tenant)

    store = open_store(max_content_bytes)
    rejects_path = Path(rejects) if rejects else default_rejects_path(hms_home(), path)
    total = None if path == "-" else os.path.getsize(path)
    with tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=not progress if progress is not None else None, file=sys.stderr) as bar:
        report = MemoryWriter(store).ingest_file(
            path,
            rejects_path=rejects_path,
            batch_size=batch_size,
            on_reject=lambda r: tqdm.write(str(r), file=sys.stderr),
            on_progress=bar.update,
            id_prefix=f"{tenant}/" if tenant else "",
        )
    store.close()
    if not report.complete:
        click.echo(f"hms: {report.rejected} rejected and {report.conflicts} conflicting line(s) written to {report.rejects_path}", err=True)
    return report


@main.command()
@click.argument("path", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON on standard output.")
@click.option("--rejects", type=click.Path(dir_okay=False), help="Where to write rejected lines (JSONL).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--max-content-bytes",
    type=click.IntRange(min=1),
    default=None,
    help=f"Largest payload.content accepted [default: $HMS_MAX_CONTENT_BYTES or {DEFAULT_MAX_CONTENT_BYTES}].",
)
@click.option("--progress/--no-progress", default=None, help="Show a progress bar [default: when on a terminal].")
@tenant_option
def ingest(path: str, as_json: bool, rejects: str | None, batch_size: int, max_content_bytes: int | None, progress: bool | None, tenant: str) -> None:
    """Append the events of a JSONL file (`-` reads standard input), its user and event ids under
    `--tenant` (`maya` is stored as `local/maya`; an id already under it is kept). Exit 0: all stored;
    2: some lines rejected, or conflicting with a stored event of the same id (the rest stored); 1: failure."""
    tenant_names(tenant)
    if path != "-" and not Path(path).is_file():
        raise click.ClickException(f"{path}: no such file")
    report = ingest_file(path, rejects=rejects, batch_size=batch_size, max_content_bytes=max_content_bytes, progress=progress, tenant=tenant)
    if as_json:
        click.echo(orjson.dumps(report.counts()).decode())
    else:
        click.echo(f"accepted {report.accepted}, duplicates {report.duplicates}, conflicts {report.conflicts}, rejected {report.rejected}")
    sys.exit(EXIT_OK if report.complete else EXIT_REJECTED)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(as_json: bool) -> None:
    """Counts of events, memories (live, archived, forgotten) and users."""
    from hms_resources.tiers.assignment import latest_tier_date, tier_sizes

    store = open_store()
    numbers = store.stats()
    latest = latest_tier_date(store)
    totals = {"hot": 0, "warm": 0, "cold": 0, "archived": 0}
    for sizes in tier_sizes(store, latest).values():
        for tier, count in sizes.items():
            totals[tier] += count
    numbers["tiers"] = {"as_of": latest, **totals}
    store.close()
    if as_json:
        click.echo(orjson.dumps(numbers).decode())
        return
    m = numbers["memories"]
    click.echo(
        f"events {numbers['events']} (last sequence {numbers['last_sequence']}), users {numbers['users']}, "
        f"memories {m['total']}: {m['live']} live, {m['archived']} archived, {m['forgotten']} forgotten; "
        f"concepts {numbers['concepts']}; tiers as of {numbers['tiers']['as_of']}: "
        + ", ".join(f"{numbers['tiers'][t]} {t}" for t in ("hot", "warm", "cold", "archived"))
    )


@main.command("forget")
@click.argument("user_id")
@click.argument("memory_id")
@click.option("--reason", default="", help="Why (erased with the rest; kept only until the event is stored).")
@click.option("--verify", is_flag=True, help="Forget nothing: report every place checked for the memory.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@tenant_option
def forget_command(user_id: str, memory_id: str, reason: str, verify: bool, as_json: bool, tenant: str) -> None:
    """Forget USER_ID's memory MEMORY_ID everywhere (USER_ID as the API names the tenant's user): erase
    it from the event log and the memories table, delete the LoRA dataset versions holding it, retire
    the adapters trained on them, and drop old page images; the other assets drop it at their next run.
    Then report every place checked. Exit 0: clean everywhere; 2: something remains (the report says
    which run clears it)."""
    from hms_resources.lora.tracking import MlflowTracking
    from hms_resources.memory.writes import MemoryWriter, WriteRefused
    from hms_resources.privacy.forget import purge_forgotten, verify_forgotten
    from hms_resources.store.projection import refresh_memories

    store = open_store()
    try:
        stored = known_user(store, tenant, user_id, "USER_ID")
    except click.BadParameter:
        store.close()
        raise
    name = api_name(tenant, stored)
    tracking = MlflowTracking.from_env()
    key = (stored, memory_id)
    status = store.memory_statuses([key]).get(key)
    if status is None:
        store.close()
        raise click.ClickException(f"no memory {memory_id!r} of user {name!r} in the store at {store.display_url}")
    if not verify:
        if status != "forgotten":
            try:
                MemoryWriter(store).forget(stored, memory_id, reason, names=tenant_names(tenant), stem="forget")
            except WriteRefused as refused:
                raise click.ClickException(f"{name}/{memory_id}: {refused.message}") from None
        refresh_memories(store)
        purged = purge_forgotten(store, tracking if tracking.in_use(store.home) else None, log=lambda m: click.echo(m, err=True))
        click.echo(f"forgot {memory_id!r} of {name!r}; purged {orjson.dumps(purged.counts()).decode()}", err=True)
    checks = verify_forgotten(store, stored, memory_id, tracking)
    store.close()
    if as_json:
        click.echo(orjson.dumps([{"place": c.place, "clean": c.clean, "detail": c.detail} for c in checks]).decode())
    else:
        for c in checks:
            click.echo(f"{'clean' if c.clean else 'REMAINS':<8} {c.place}: {c.detail}")
    sys.exit(EXIT_OK if all(c.clean for c in checks) else EXIT_REJECTED)


@main.command()
@click.option("--users", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--sessions", type=click.IntRange(min=1), default=12, show_default=True, help="Sessions per user.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True), default="-", show_default=True)
def generate(users: int, sessions: int, seed: int, out: str) -> None:
    """Write seeded synthetic multi-user memory events as JSONL."""
    from hms_resources.datasets.synthetic import generate_events

    stream = sys.stdout.buffer if out == "-" else open(out, "wb")
    try:
        for record in generate_events(users=users, sessions_per_user=sessions, seed=seed):
            stream.write(orjson.dumps(record) + b"\n")
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()


@main.command("migrate")
@click.argument("revision", default="head")
def migrate_command(revision: str) -> None:
    """Move the store's schema to REVISION (`head`, `base` or a revision id)."""
    store = open_store()
    migrate(store.url, revision)
    click.echo(f"event store at {store.display_url} is at revision {revision}")


@main.command()
@click.option("--postgres", is_flag=True, help="Use PostgreSQL instance storage ($HMS_DAGSTER_PG_URL).")
def instance(postgres: bool) -> None:
    """Write the Dagster instance config to $DAGSTER_HOME (default $HMS_HOME/dagster)."""
    from hms_jobs.instance import prepare_dagster_home

    home = prepare_dagster_home(postgres=postgres, replace=True)
    click.echo(f"DAGSTER_HOME={home}")
