"""`hms`: ingest events, look at the store, and run HMS's Dagster jobs from a terminal."""

from __future__ import annotations

import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import orjson

from hms_resources.common.home import hms_home, redact_url
from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.lora.candidates import CURATION_ACTIONS
from hms_resources.store.event_store import EventStore, migrate
from hms_resources.store.events import DEFAULT_MAX_CONTENT_BYTES
from hms_resources.store.ingest import DEFAULT_BATCH_SIZE, IngestReport, default_rejects_path, ingest_path

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


def _store(max_content_bytes: int | None = None) -> EventStore:
    store = EventStore.from_env()
    if max_content_bytes is not None:
        store = EventStore(
            database_url=store.database_url, hms_home=store.hms_home, max_content_bytes=max_content_bytes
        )
    return store


def _ingest(path: str, *, rejects: str | None, batch_size: int, max_content_bytes: int | None, progress: bool | None) -> IngestReport:
    from tqdm import tqdm

    store = _store(max_content_bytes)
    rejects_path = Path(rejects) if rejects else default_rejects_path(hms_home(), path)
    total = None if path == "-" else os.path.getsize(path)
    with tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=not progress if progress is not None else None, file=sys.stderr) as bar:
        report = ingest_path(
            store,
            path,
            rejects_path=rejects_path,
            batch_size=batch_size,
            on_reject=lambda r: tqdm.write(str(r), file=sys.stderr),
            on_progress=bar.update,
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
def ingest(path: str, as_json: bool, rejects: str | None, batch_size: int, max_content_bytes: int | None, progress: bool | None) -> None:
    """Append the events of a JSONL file (`-` reads standard input). Exit 0: all stored; 2: some lines
    rejected, or conflicting with a stored event of the same id (the rest stored); 1: failure."""
    if path != "-" and not Path(path).is_file():
        raise click.ClickException(f"{path}: no such file")
    report = _ingest(path, rejects=rejects, batch_size=batch_size, max_content_bytes=max_content_bytes, progress=progress)
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

    store = _store()
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
def forget_command(user_id: str, memory_id: str, reason: str, verify: bool, as_json: bool) -> None:
    """Forget USER_ID's memory MEMORY_ID everywhere: erase it from the event log and the memories table,
    delete the LoRA dataset versions holding it, retire the adapters trained on them, and drop old page
    images; the other assets drop it at their next run. Then report every place checked. Exit 0: clean
    everywhere; 2: something remains (the report says which run clears it)."""
    from hms_resources.lora.tracking import MlflowTracking
    from hms_resources.privacy.forget import purge_forgotten, verify_forgotten
    from hms_resources.store.events import MEMORY_FORGOTTEN, parse_event
    from hms_resources.store.projection import refresh_memories

    store = _store()
    tracking = MlflowTracking(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""))
    key = (user_id, memory_id)
    status = store.memory_statuses([key]).get(key)
    if status is None:
        raise click.ClickException(f"no memory {memory_id!r} of user {user_id!r} in the store at {store.display_url}")
    if not verify:
        if status != "forgotten":
            store.append([parse_event({
                "event_id": f"forget-{uuid.uuid4().hex}", "type": MEMORY_FORGOTTEN, "user_id": user_id, "memory_id": memory_id,
                "occurred_at": datetime.now(timezone.utc).isoformat(), "payload": {"reason": reason} if reason else {},
            })], strict=True)
        refresh_memories(store)
        purged = purge_forgotten(store, tracking if tracking.in_use(store.home) else None, log=lambda m: click.echo(m, err=True))
        click.echo(f"forgot {memory_id!r} of {user_id!r}; purged {orjson.dumps(purged.counts()).decode()}", err=True)
    checks = verify_forgotten(store, user_id, memory_id, tracking)
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
    store = _store()
    migrate(store.url, revision)
    click.echo(f"event store at {store.display_url} is at revision {revision}")


@main.command()
@click.option("--postgres", is_flag=True, help="Use PostgreSQL instance storage ($HMS_DAGSTER_PG_URL).")
def instance(postgres: bool) -> None:
    """Write the Dagster instance config to $DAGSTER_HOME (default $HMS_HOME/dagster)."""
    from hms_jobs.instance import prepare_dagster_home

    home = prepare_dagster_home(postgres=postgres, replace=True)
    click.echo(f"DAGSTER_HOME={home}")


@main.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None, help="Your own events (JSONL).")
@click.option("--approve", type=click.IntRange(min=0), default=0, show_default=True,
              help="Approve the N largest pending LoRA candidate sets, then train, register and compare their adapters.")
def run(data: str | None, approve: int) -> None:
    """Ingest events (the bundled sample by default), run the main job, then migrate the tiers of the
    last complete day, compact the cold tier and run the LoRA job (`--approve N` first approves sets
    for it, as a person would with `hms curate approve`)."""
    from hms_jobs.instance import WORKSPACE, prepare_dagster_home

    path = data or str(SAMPLE_EVENTS)
    report = _ingest(path, rejects=None, batch_size=DEFAULT_BATCH_SIZE, max_content_bytes=None, progress=None)
    click.echo(f"ingested {path}: {orjson.dumps(report.counts()).decode()}")
    home = prepare_dagster_home()
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    jobs = (("main_job", None), ("tier_migration_job", yesterday), ("cold_archive_job", None), ("lora_job", None))
    success = _run_jobs(jobs)
    if success and approve and _approve_largest_sets(approve):
        success = _run_jobs([("lora_job", None)])
    if success:
        _print_comparison()
    store = _store()
    if success:
        _show_sample_context(store)
    click.echo(f"store: {store.display_url}")
    click.echo(f"dagster instance: {home}")
    hms = Path(sys.executable).with_name("hms")
    shown = os.path.relpath(hms) if hms.is_relative_to(Path.cwd()) else str(hms)
    click.echo(f"next: `make ui` and open http://127.0.0.1:3000 (workspace {WORKSPACE.name}); `{shown} stats --json`")
    store.close()
    sys.exit(EXIT_OK if success else EXIT_FAILURE)


def _run_jobs(jobs) -> bool:
    """Run (job name, partition key) pairs in order on the instance in $DAGSTER_HOME, printing each;
    stop at the first failure. Runs left unfinished by a killed `hms` are failed first, so that
    their pool slots do not block these; a step waiting for a slot says which run holds it."""
    import uuid

    import dagster as dg

    from hms_jobs.definitions import defs
    from hms_jobs.instance import prepare_dagster_home
    from hms_jobs.run_recovery import PoolWaitWatcher, process_tags, recover_dead_runs

    prepare_dagster_home()
    definitions = defs()
    with dg.DagsterInstance.get() as dagster_instance:
        for recovered in recover_dead_runs(dagster_instance):
            click.echo(recovered.describe(), err=True)
        for job_name, partition_key in jobs:
            job = definitions.resolve_job_def(job_name)
            run_id = str(uuid.uuid4())
            with PoolWaitWatcher(dagster_instance, job_name, run_id, job.graph.pools, lambda line: click.echo(line, err=True)):
                result = job.execute_in_process(
                    instance=dagster_instance,
                    partition_key=partition_key,
                    run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
                    raise_on_error=False,
                    run_id=run_id,
                    tags=process_tags(),
                )
            _print_run(job_name, partition_key, result)
            if not result.success:
                return False
    return True


def _approve_largest_sets(count: int) -> list[str]:
    """Approve the `count` pending candidate sets with the most memories."""
    from hms_resources.lora.adapters import lora_dir
    from hms_resources.lora.candidates import PENDING, curate, load_candidate_sets, load_curation, save_curation

    home = hms_home()
    curation = load_curation(home)
    pending = [s for s in load_candidate_sets(lora_dir(home)) if curation.set_status(s.set_id) == PENDING]
    chosen = [s.set_id for s in sorted(pending, key=lambda s: (-len(s.memory_ids), s.set_id))[:count]]
    if not chosen:
        click.echo("no pending LoRA candidate set to approve")
        return []
    save_curation(home, curate(curation, "approve", chosen))
    click.echo(f"approved {len(chosen)} LoRA candidate set(s): {', '.join(chosen)}")
    return chosen


SAMPLE_QUERY = "What does this user care about at work, and what should I keep in mind when helping?"


def _show_sample_context(store: EventStore) -> None:
    """End a run the way an assistant would use HMS: one assembled context for a sample query."""
    from hms_resources.context.assembler import ContextAssembler

    assembler = ContextAssembler.from_env()
    users = sorted(assembler.snapshot.users)
    if not users:
        return
    context = assembler.assemble(users[0], SAMPLE_QUERY, 256)
    timings = ", ".join(f"{k} {v:.1f}" for k, v in context.timings_ms.items())
    click.echo(f"\ncontext for {users[0]}: {SAMPLE_QUERY!r} ({context.token_count}/256 tokens; ms: {timings})")
    for item in context.items:
        click.echo(f"  {item.kind:<15} {item.tier:<4} {item.score:6.3f}  {item.text}")
    _show_adapter_choice(assembler)
    assembler.flush_accesses()
    assembler.close()
    click.echo("")


def _show_adapter_choice(assembler) -> None:
    """For the first champion adapter, the adapter a question about its concept gets (`Context.adapter`)."""
    from hms_resources.lora.adapters import load_champions, lora_dir
    from hms_resources.lora.candidates import load_candidate_sets

    champions = load_champions(assembler.event_store.home)
    if not champions:
        return
    first = champions[0]
    labels = {s.set_id: s.label for s in load_candidate_sets(lora_dir(assembler.event_store.home))}
    query = f"What have I told you about {(labels.get(first['set_id']) or ['that'])[0]}?"
    adapter = assembler.assemble(first["user_id"], query, 256).adapter
    chosen = f"{adapter} (similarity {adapter.similarity}, {adapter.path})" if adapter else "none matches closely enough"
    click.echo(f"\nadapter for {first['user_id']}: {query!r}: {chosen}")


def _print_run(job_name: str, partition_key: str | None, result) -> None:
    where = f" for {partition_key}" if partition_key else ""
    click.echo(f"{job_name}{where} run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
    for materialization in result.get_asset_materialization_events():
        mat = materialization.materialization
        shown = {
            k: v.value
            for k, v in mat.metadata.items()
            if not k.startswith("dagster/") and isinstance(v.value, (int, float)) and not isinstance(v.value, bool)
        }
        click.echo(f"  materialized {mat.asset_key.to_user_string()}: {shown}")
    for check in result.get_asset_check_evaluations():
        click.echo(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'}")


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
    @click.option("--memory", "memories", type=(str, str), multiple=True, metavar="USER MEMORY", help="A memory instead of, or beside, sets.")
    def command(set_ids: tuple[str, ...], memories: tuple[tuple[str, str], ...]) -> None:
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
        if memories:
            store = _store()
            stored = store.memory_statuses(memories)
            store.close()
            missing = [f"{u}/{m}" for u, m in memories if (u, m) not in stored]
            if missing:
                raise click.ClickException(f"no memory {', '.join(missing)} in the store")
        path = save_curation(home, apply_curation(load_curation(home), action, list(set_ids), list(memories)))
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


def _print_comparison() -> None:
    from hms_resources.lora.adapters import comparison_rows, format_comparison

    rows = comparison_rows(hms_home())
    if rows:
        click.echo("\nadapter comparison (the same probes per set):\n" + format_comparison(rows) + "\n")


@lora.command("train")
def lora_train() -> None:
    """Run `lora_job` now: select sets, build the approved ones' datasets, train, register, compare."""
    success = _run_jobs([("lora_job", None)])
    _print_comparison()
    sys.exit(EXIT_OK if success else EXIT_FAILURE)


@lora.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def lora_list(as_json: bool) -> None:
    """Every set's registered versions, their aliases and fact recall."""
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
            click.echo(f"  version {v['version']:<3} {', '.join(v['aliases']) or '-':<22} fact recall {v['fact_recall']}  run {v['run_id']}")


@lora.command("compare")
def lora_compare() -> None:
    """The latest adapter comparison: the base and every registered adapter on each set's probes."""
    from hms_resources.lora.adapters import comparison_rows, format_comparison

    click.echo(format_comparison(comparison_rows(hms_home())))


@lora.command("rollback")
@click.argument("set_id")
@click.option("--version", default=None, help="The version to make champion [default: the one the champion replaced].")
def lora_rollback(set_id: str, version: str | None) -> None:
    """Make an earlier version of SET_ID's adapter the champion again; the context resource follows."""
    from hms_resources.lora.adapters import publish_champions
    from hms_resources.lora.registry import CHAMPION, alias_version, rollback

    client = _tracking_client()
    before = alias_version(client, set_id, CHAMPION)
    target = rollback(client, set_id, version)
    publish_champions(client, hms_home())
    click.echo(f"{set_id}: champion is version {target} (was {before.version})")


def _tracking_client():
    from hms_resources.lora.tracking import MlflowTracking

    tracking = MlflowTracking(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""))
    tracking.experiment_id(hms_home())
    return tracking.client(hms_home())


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
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: when stderr is a terminal).")
def eval_retrieval(data: str, budgets: tuple[int, ...], json_out: str | None, progress: bool | None) -> None:
    """Evidence recall and latency of the context resource on DATA (JSON Lines of memories and
    questions), against BM25-only, dense-only and hybrid baselines, in a fresh temporary HMS home."""
    from hms_jobs.retrieval_harness import evaluate_retrieval, format_report

    show = sys.stderr.isatty() if progress is None else progress
    result = evaluate_retrieval(data, budgets, tokenizer=os.environ.get("HMS_TOKENIZER", ""), progress=show, log=lambda m: click.echo(m, err=True))
    click.echo(format_report(result))
    if json_out:
        Path(json_out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"wrote {json_out}", err=True)


@main.command()
@click.option("--port", type=int, default=3000, show_default=True)
def ui(port: int) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on HMS's instance."""
    from hms_jobs.instance import WORKSPACE, prepare_dagster_home

    prepare_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    os.execv(str(dagster), [str(dagster), "dev", "-w", str(WORKSPACE), "-p", str(port)])


if __name__ == "__main__":
    main()
