"""`hms run` and `hms ui`: run HMS's jobs on the local Dagster instance, then show what an assistant gets."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import orjson

from hms_jobs.cli import EXIT_FAILURE, EXIT_OK, main
from hms_jobs.cli.store import ingest_file, open_store
from hms_jobs.cli.users import api_name, tenant_option
from hms_resources.common.home import hms_home
from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.store.ingest import DEFAULT_BATCH_SIZE

SAMPLE_QUERY = "What does this user care about at work, and what should I keep in mind when helping?"
SAMPLE_BUDGET = 256
UI_HOST, UI_PORT = "127.0.0.1", 3000


class RunReport:
    """What a run tells: lines for a person and, under `--json`, the same facts as one JSON object on
    the last stdout line; the lines then go to stderr so that stdout stays readable by a program."""

    def __init__(self, as_json: bool = False):
        self.as_json = as_json
        self.facts: dict = {"runs": []}

    def say(self, line: str = "") -> None:
        click.echo(line, err=self.as_json)

    def add_run(self, summary: dict) -> None:
        self.facts["runs"].append(summary)
        where = f" for {summary['partition']}" if summary["partition"] else ""
        self.say(f"{summary['job']}{where} run {summary['run_id']}: {'succeeded' if summary['success'] else 'FAILED'}")
        for asset, shown in summary["materialized"].items():
            self.say(f"  materialized {asset}: {shown}")
        for check in summary["checks"]:
            self.say(f"  check {check['check']}: {'passed' if check['passed'] else 'FAILED'}")

    def finish(self) -> None:
        if self.as_json:
            click.echo(orjson.dumps(self.facts, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode())


@main.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None, help="Your own events (JSONL).")
@click.option("--approve", type=click.IntRange(min=0), default=0, show_default=True,
              help="Approve the N largest pending LoRA candidate sets, then train, register and compare their adapters.")
@click.option("--json", "as_json", is_flag=True,
              help="End with one JSON object on standard output (runs, materializations, checks, the sample context); the rest goes to stderr.")
@tenant_option
def run(data: str | None, approve: int, as_json: bool, tenant: str) -> None:
    """Ingest events (the bundled sample by default) for `--tenant`, so that its API key sees them, run
    the main job, then migrate the tiers of the last complete day, compact the cold tier and run the
    LoRA job (`--approve N` first approves sets for it, as a person would with `hms curate approve`)."""
    from hms_jobs.instance import WORKSPACE, prepare_dagster_home

    report = RunReport(as_json)
    path = data or str(SAMPLE_EVENTS)
    ingested = ingest_file(path, rejects=None, batch_size=DEFAULT_BATCH_SIZE, max_content_bytes=None, progress=None, tenant=tenant)
    report.facts["ingested"] = {"path": path, **ingested.counts()}
    report.say(f"ingested {path}: {orjson.dumps(ingested.counts()).decode()}")
    home = prepare_dagster_home()
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    jobs = (("main_job", None), ("tier_migration_job", yesterday), ("cold_archive_job", None), ("lora_job", None))
    success = run_jobs(jobs, report)
    if success and approve and approve_largest_sets(approve, report):
        success = run_jobs([("lora_job", None)], report)
    if success:
        print_comparison(report)
    store = open_store()
    if success:
        show_sample_context(report, tenant)
    report.say(f"store: {store.display_url}")
    report.say(f"dagster instance: {home}")
    hms = Path(sys.executable).with_name("hms")
    shown = os.path.relpath(hms) if hms.is_relative_to(Path.cwd()) else str(hms)
    report.say(f"next: `{ui_command(shown)}` and open http://{UI_HOST}:{UI_PORT} (workspace {WORKSPACE.name}); `{shown} stats --json`")
    store.close()
    report.facts.update(success=success, store=store.display_url, dagster_instance=str(home))
    report.finish()
    sys.exit(EXIT_OK if success else EXIT_FAILURE)


def run_jobs(jobs, report: RunReport | None = None) -> bool:
    """Run (job name, partition key) pairs in order on the instance in $DAGSTER_HOME, printing each (a
day of a job partitioned by day and user shard runs every shard of that day in one run);
    stop at the first failure. Runs left unfinished by a killed `hms` are failed first, so that
    their pool slots do not block these; a step waiting for a slot says which run holds it."""
    import uuid

    import dagster as dg

    from hms_assets.tiers.partitions import all_shards_of_days, build_daily_user_shard_partitions
    from hms_jobs.definitions import defs
    from hms_jobs.instance import prepare_dagster_home
    from hms_jobs.run_recovery import PoolWaitWatcher, process_tags, recover_dead_runs

    report = report or RunReport()
    prepare_dagster_home()
    definitions = defs()
    sharded_by_day = build_daily_user_shard_partitions()
    with dg.DagsterInstance.get() as dagster_instance:
        for recovered in recover_dead_runs(dagster_instance):
            click.echo(recovered.describe(), err=True)
        for job_name, partition_key in jobs:
            job = definitions.resolve_job_def(job_name)
            run_id = str(uuid.uuid4())
            tags, key = process_tags(), partition_key
            if partition_key and job.partitions_def == sharded_by_day:
                tags, key = {**tags, **all_shards_of_days(partition_key)}, None
            with PoolWaitWatcher(dagster_instance, job_name, run_id, job.graph.pools, lambda line: click.echo(line, err=True)):
                result = job.execute_in_process(
                    instance=dagster_instance,
                    partition_key=key,
                    run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
                    raise_on_error=False,
                    run_id=run_id,
                    tags=tags,
                )
            report.add_run(run_summary(job_name, partition_key, result))
            if not result.success:
                return False
    return True


RUN_WIDE = frozenset({"partitions_in_run"})
"""Numeric metadata every partition of a run repeats: shown once, not summed."""


def run_summary(job_name: str, partition_key: str | None, result) -> dict:
    """A run's outcome, the numeric metadata of each asset it materialized, and its checks. A run of
    a day's user shards materializes one partition per shard, each with its own counts: the summary
    adds them up over the latest day the run covered."""
    materialized: dict[str, dict] = {}
    latest: dict[str, str] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        name = mat.asset_key.to_user_string()
        numbers = {
            k: v.value
            for k, v in mat.metadata.items()
            if not k.startswith("dagster/") and isinstance(v.value, (int, float)) and not isinstance(v.value, bool)
        }
        if mat.partition is None:
            materialized[name] = numbers
            continue
        day = str(mat.partition).split("|")[0]
        if day > latest.get(name, ""):
            latest[name], materialized[name] = day, {}
        elif day < latest[name]:
            continue
        shown = materialized[name]
        for k, v in numbers.items():
            shown[k] = v if k in RUN_WIDE else shown.get(k, 0) + v
    checks = [{"asset": c.asset_key.to_user_string(), "check": c.check_name, "passed": c.passed} for c in result.get_asset_check_evaluations()]
    return {"job": job_name, "partition": partition_key, "run_id": result.run_id, "success": result.success,
            "materialized": materialized, "checks": checks}


def approve_largest_sets(count: int, report: RunReport) -> list[str]:
    """Approve the `count` pending candidate sets with the most memories."""
    from hms_resources.lora.adapters import lora_dir
    from hms_resources.lora.candidates import PENDING, curate, load_candidate_sets, load_curation, save_curation

    home = hms_home()
    curation = load_curation(home)
    pending = [s for s in load_candidate_sets(lora_dir(home)) if curation.set_status(s.set_id) == PENDING]
    chosen = [s.set_id for s in sorted(pending, key=lambda s: (-len(s.memory_ids), s.set_id))[:count]]
    report.facts["approved"] = chosen
    if not chosen:
        report.say("no pending LoRA candidate set to approve")
        return []
    save_curation(home, curate(curation, "approve", chosen))
    report.say(f"approved {len(chosen)} LoRA candidate set(s): {', '.join(chosen)}")
    return chosen


def print_comparison(report: RunReport) -> None:
    """The promotion gate's verdict per approved set: not trained and why, or one line with the verdict
    and one with the figures it rests on; then the comparison table."""
    from hms_resources.common.files import read_json
    from hms_resources.lora.adapters import TRAINING_DATA_MANIFEST, comparison_rows, format_comparison, lora_dir

    home = hms_home()
    manifest = read_json(lora_dir(home) / TRAINING_DATA_MANIFEST, {})
    failed = {**manifest.get("too_few_facts", {}), **manifest.get("failed", {})}
    rows = comparison_rows(home)
    verdicts = gate_verdicts(home, manifest.get("datasets", {}))
    report.facts["comparison"] = rows
    report.facts["not_trained"] = failed
    report.facts["gate_verdicts"] = verdicts
    for set_id, reason in sorted(failed.items()):
        report.say(f"LoRA {set_id}: not trained: {reason.split(': ', 1)[-1]}")
    for verdict in verdicts:
        report.say(f"LoRA {verdict['set_id']}: {verdict['verdict']}")
        if verdict["figures_line"]:
            report.say(f"  {verdict['figures_line']}")
    if rows:
        report.say("\nadapter comparison (the base and every version on each set's held-out data):\n" + format_comparison(rows) + "\n")


def gate_verdicts(home: Path, datasets: dict[str, dict]) -> list[dict]:
    """Per set with training data, the verdict on the adapter trained on it, as the registry recorded it
    (`hms.gate`, `hms.decision`), and the figures it rests on (`lora/adapters.json`); one line each."""
    from hms_resources.lora.adapters import trained_adapters, verdict_line
    from hms_resources.lora.registry import adapter_figures

    adapters = trained_adapters(home)
    current = {s: adapters[s] for s, built in sorted(datasets.items())
               if str(adapters.get(s, {}).get("key", "")).startswith(f"{built['version']}:")}
    versions = _registered_versions(home) if current else {}
    verdicts = []
    for set_id in sorted(datasets):
        entry = current.get(set_id)
        if entry is None:
            verdicts.append({"set_id": set_id, "verdict": f"no adapter trained on dataset {datasets[set_id]['version']}",
                             "passed": False, "promoted": False, "reasons": [], "figures": {}, "figures_line": ""})
            continue
        version = versions.get((set_id, entry["run_id"]), {})
        figures = adapter_figures(entry)
        try:
            figures_line = verdict_line(figures)
        except KeyError as missing:
            figures_line = f"figures incomplete (no {missing}): {figures}"
        verdicts.append({"set_id": set_id, "version": version.get("version"), "run_id": entry["run_id"],
                         **_verdict(version), "figures": figures, "figures_line": figures_line})
    return verdicts


def _verdict(version: dict) -> dict:
    """The gate's verdict on a registered version in words: passed and promoted or kept, or failed and why."""
    gate, decision = version.get("gate"), version.get("decision") or ""
    if gate is None:
        return {"verdict": "not judged by the promotion gate (not registered)", "passed": False, "promoted": False, "reasons": []}
    outcome = gate.split(": ", 1)[-1]
    if outcome != "passed":
        reasons = outcome.removeprefix("failed: ").split("; ")
        return {"verdict": "gate failed: " + "; ".join(reasons), "passed": False, "promoted": False, "reasons": reasons}
    named = f" (version {version['version']})"
    if "champion" in version.get("aliases", []):
        return {"verdict": "gate passed: promoted to champion" + named, "passed": True, "promoted": True, "reasons": []}
    kept = decision.removeprefix("kept as challenger: ") or "not promoted"
    return {"verdict": f"gate passed: kept as challenger{named}: {kept}", "passed": True, "promoted": False, "reasons": [kept]}


def _registered_versions(home: Path) -> dict[tuple[str, str], dict]:
    """Every registered adapter version by (set, run): its number, aliases and the registry's tags."""
    from hms_resources.lora.registry import registered_models
    from hms_resources.lora.tracking import MlflowTracking

    client = MlflowTracking.from_env().client(home)
    return {(model["set_id"], v["run_id"]): v for model in registered_models(client) for v in model["versions"]}


def ui_command(hms: str) -> str:
    """How to start the UI here: `make ui` in a checkout (its Makefile has the target), else `hms ui`."""
    makefile = Path("Makefile")
    if makefile.is_file() and any(line.startswith("ui:") for line in makefile.read_text(errors="replace").splitlines()):
        return "make ui"
    return f"{hms} ui"


def show_sample_context(report: RunReport, tenant: str) -> None:
    """End a run the way an assistant would use HMS: one assembled context for a sample query, for the
    first user of the tenant the run ingested for (named as its API key names them)."""
    from hms_resources.context.assembler import ContextAssembler
    from hms_resources.memory.writes import MemoryWriter

    assembler = ContextAssembler.from_env()
    users = sorted(assembler.snapshot.users)
    users = [u for u in users if u.startswith(f"{tenant}/")] or users
    if not users:
        return
    context = assembler.assemble(users[0], SAMPLE_QUERY, SAMPLE_BUDGET)
    user = api_name(tenant, users[0])
    report.facts["context"] = {
        "user": user, "tenant": tenant, "query": SAMPLE_QUERY, "token_budget": SAMPLE_BUDGET, "token_count": context.token_count,
        "timings_ms": context.timings_ms,
        "items": [{"kind": i.kind, "tier": i.tier, "score": i.score, "memory_id": i.memory_id, "text": i.text} for i in context.items],
    }
    timings = ", ".join(f"{k} {v:.1f}" for k, v in context.timings_ms.items())
    report.say(f"\ncontext for {user}: {SAMPLE_QUERY!r} ({context.token_count}/{SAMPLE_BUDGET} tokens; ms: {timings})")
    for item in context.items:
        report.say(f"  {item.kind:<15} {item.tier:<4} {item.score:6.3f}  {item.text}")
    show_adapter_choice(assembler, report, tenant)
    writer = MemoryWriter(assembler.event_store)
    writer.record_accesses(users[0], context.source_ids, SAMPLE_QUERY)
    writer.close()
    assembler.close()
    report.say("")


def show_adapter_choice(assembler, report: RunReport, tenant: str) -> None:
    """For the first champion adapter, the adapter a question about its concept gets (`Context.adapter`)."""
    from hms_resources.lora.adapters import load_champions, lora_dir
    from hms_resources.lora.candidates import load_candidate_sets

    champions = load_champions(assembler.event_store.home)
    if not champions:
        return
    first = champions[0]
    labels = {s.set_id: s.label for s in load_candidate_sets(lora_dir(assembler.event_store.home))}
    query = f"What have I told you about {(labels.get(first['set_id']) or ['that'])[0]}?"
    adapter = assembler.assemble(first["user_id"], query, SAMPLE_BUDGET).adapter
    user = api_name(tenant, first["user_id"])
    report.facts["adapter"] = {
        "user": user, "query": query,
        "chosen": None if adapter is None else {"name": adapter.name, "version": adapter.version, "set_id": adapter.set_id,
                                                "similarity": adapter.similarity, "path": adapter.path},
    }
    chosen = f"{adapter} (similarity {adapter.similarity}, {adapter.path})" if adapter else "none matches closely enough"
    report.say(f"\nadapter for {user}: {query!r}: {chosen}")


@main.command()
@click.option("--host", default=UI_HOST, show_default=True, help="Address to bind; loopback unless you put a proxy with TLS in front.")
@click.option("--port", type=click.IntRange(0, 65535), default=UI_PORT, show_default=True)
def ui(host: str, port: int) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on HMS's instance."""
    from hms_jobs.instance import WORKSPACE, prepare_dagster_home

    prepare_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    os.execv(str(dagster), [str(dagster), "dev", "-w", str(WORKSPACE), "-h", host, "-p", str(port)])
