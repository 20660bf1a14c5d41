"""Forget is total: what `memory.forgotten` must remove beyond the event log, and the check that it did.

The log erases a forgotten memory's payload in the append transaction, and the assets that read the
log rebuild without it (memories, embeddings, concepts, graph, tiers, cold archive, candidate sets).
What no rebuild touches is purged here: LoRA dataset versions that hold the memory, the adapters
trained on them (retired from the registry and from `Context.adapter` until retrained without it),
rejected input lines that name it, and user text in tier reasons of past days. SQLite then drops
the old page images (`secure_delete` is always on; the WAL is checkpointed and truncated)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hms_resources.store.event_store import EventStore
from hms_resources.store.memory_state import MemoryKey

Log = Callable[[str], None]


@dataclass
class PurgeReport:
    dataset_versions: list[str] = field(default_factory=list)
    retired_runs: list[str] = field(default_factory=list)
    rejected_lines: int = 0
    tier_reasons: int = 0

    def counts(self) -> dict[str, int]:
        return {"dataset_versions": len(self.dataset_versions), "retired_adapters": len(self.retired_runs),
                "rejected_lines": self.rejected_lines, "tier_reasons": self.tier_reasons}


def purge_forgotten(store: EventStore, tracking: Any | None = None, log: Log = lambda _m: None) -> PurgeReport:
    """Remove every forgotten memory from the artifacts no rebuild touches; idempotent, and cheap when
    nothing is left to purge. `tracking` (an `MlflowTracking`) retires adapters; without it, adapters
    are only dropped from the local manifests."""
    from hms_resources.tiers.assignment import erase_tier_reasons

    report = PurgeReport()
    home = store.home
    forgotten = store.forgotten_memories()
    if not forgotten:
        return report
    report.dataset_versions = _purge_datasets(home, forgotten, log)
    purged = purged_dataset_versions(home)
    if report.dataset_versions or (purged and tracking is not None):
        report.retired_runs = _retire_adapters(home, purged, tracking, log)
    report.rejected_lines = _scrub_rejects(home, forgotten)
    report.tier_reasons = erase_tier_reasons(store, forgotten)
    store.drop_erased_pages()
    return report


def _dataset_versions(home: Path) -> Iterable[tuple[str, Path]]:
    from hms_resources.lora.adapters import lora_dir

    root = lora_dir(home) / "datasets"
    if root.is_dir():
        for set_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for version_dir in sorted(p for p in set_dir.iterdir() if (p / "dataset_dict.json").exists()):
                yield version_dir.name, version_dir


def _dataset_members(path: Path) -> set[MemoryKey]:
    from hms_resources.lora.adapters import load_splits

    train, probes = load_splits(path)
    return {(row["user_id"], row["memory_id"]) for row in train + probes}


PURGED_DATASETS_FILE = "purged_datasets.json"
"""Dataset versions deleted for holding a forgotten memory: an adapter trained on one is retired
wherever it is registered, even by a run that sees no dataset left to delete."""


def purged_dataset_versions(home: Path) -> set[str]:
    from hms_resources.common.files import read_json
    from hms_resources.lora.adapters import lora_dir

    return set(read_json(lora_dir(home) / PURGED_DATASETS_FILE, []))


def _purge_datasets(home: Path, forgotten: set[MemoryKey], log: Log) -> list[str]:
    """Delete every dataset version holding a forgotten memory, and its entry in the training manifest."""
    from hms_resources.common.files import read_json, write_json
    from hms_resources.lora.adapters import TRAINING_DATA_MANIFEST, lora_dir

    deleted = []
    for version, path in _dataset_versions(home):
        if _dataset_members(path) & forgotten:
            shutil.rmtree(path)
            deleted.append(version)
            log(f"deleted LoRA dataset version {version}: it held a forgotten memory")
    if deleted:
        write_json(lora_dir(home) / PURGED_DATASETS_FILE, sorted(purged_dataset_versions(home) | set(deleted)))
        manifest_path = lora_dir(home) / TRAINING_DATA_MANIFEST
        manifest = read_json(manifest_path, {"datasets": {}, "failed": {}})
        manifest["datasets"] = {s: d for s, d in manifest["datasets"].items() if d["version"] not in deleted}
        write_json(manifest_path, manifest)
    return deleted


def _retire_adapters(home: Path, versions: set[str], tracking: Any | None, log: Log) -> list[str]:
    """Every adapter run trained on one of `versions`: its registry versions deleted (aliases go with
    them), its artifacts and local files removed, the run deleted, and the champions republished."""
    from hms_resources.common.files import write_json
    from hms_resources.lora.adapters import ADAPTERS_DIR, ADAPTERS_MANIFEST, load_champions, lora_dir, publish_champions, trained_adapters

    retired: set[str] = set()
    adapters = trained_adapters(home)
    retired.update(a["run_id"] for a in adapters.values() if a.get("key", "").split(":")[0] in versions)
    retired.update(c["run_id"] for c in load_champions(home) if c.get("dataset_version") in versions)
    client = None
    if tracking is not None:
        client = tracking.client(home)
        experiment_id = tracking.experiment_id(home)
        for version in sorted(v for v in versions if v.isalnum()):
            runs = client.search_runs([experiment_id], filter_string=f"tags.`hms.dataset_version` = '{version}'", max_results=10_000)
            retired.update(run.info.run_id for run in runs)
        for run_id in sorted(retired):
            _retire_run(client, run_id, log)
    for run_id in retired:
        shutil.rmtree(lora_dir(home) / ADAPTERS_DIR / run_id, ignore_errors=True)
    write_json(lora_dir(home) / ADAPTERS_MANIFEST, {s: a for s, a in adapters.items() if a["run_id"] not in retired})
    if client is not None:
        publish_champions(client, home)
    else:
        _drop_champions(home, retired)
    return sorted(retired)


def _retire_run(client: Any, run_id: str, log: Log) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for version in client.search_model_versions(f"run_id = '{run_id}'"):
        client.delete_model_version(version.name, version.version)
        log(f"retired {version.name} version {version.version}: trained on a forgotten memory")
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return
    get_artifact_repository(run.info.artifact_uri).delete_artifacts()
    if run.info.lifecycle_stage != "deleted":
        client.delete_run(run_id)


def _drop_champions(home: Path, retired: set[str]) -> None:
    from hms_resources.common.files import write_json
    from hms_resources.lora.adapters import CHAMPIONS_FILE, load_champions, lora_dir

    champions = load_champions(home)
    kept = [c for c in champions if c["run_id"] not in retired]
    if len(kept) != len(champions):
        write_json(lora_dir(home) / CHAMPIONS_FILE, kept)


ERASED_LINE = "(erased: it named a forgotten memory)"


def _scrub_rejects(home: Path, forgotten: set[MemoryKey]) -> int:
    """Rejected lines keep the raw input for the operator to fix; a line naming a forgotten memory
    keeps only its line number and reason."""
    from hms_resources.common.files import write_bytes

    scrubbed = 0
    for path in _rejects_files(home):
        lines = path.read_bytes().splitlines()
        kept = []
        for raw in lines:
            record = _rejected_record(raw)
            if record is not None and _names_forgotten(record.get("raw", ""), forgotten):
                record["raw"] = ERASED_LINE
                scrubbed += 1
                raw = orjson.dumps(record)
            kept.append(raw)
        if kept != lines:
            write_bytes(path, b"\n".join(kept) + b"\n")
    return scrubbed


def _rejects_files(home: Path) -> list[Path]:
    folder = home / "rejects"
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def _rejected_record(line: bytes) -> dict | None:
    """One line of a rejects file; None for a line that is not one (a file edited by hand)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("raw"), str) else None


def _names_forgotten(raw: str, forgotten: set[MemoryKey]) -> bool:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(record, dict) or not isinstance(record.get("user_id"), str):
        return False
    user = record["user_id"]
    payload = record.get("payload") if isinstance(record.get("payload"), dict) else {}
    named = [record.get("memory_id"), record.get("event_id"), payload.get("target")]
    return any(isinstance(m, str) and (user, m) in forgotten for m in named)


@dataclass(frozen=True)
class Check:
    place: str
    clean: bool
    detail: str


def verify_forgotten(store: EventStore, user_id: str, memory_id: str, tracking: Any | None = None) -> list[Check]:
    """Every place a memory's text or a model trained on it could be, checked for one forgotten memory."""
    from hms_resources.lora.adapters import load_champions, lora_dir, trained_adapters, training_datasets
    from hms_resources.lora.candidates import load_candidate_sets
    from hms_resources.semantic.concepts import load_concepts
    from hms_resources.semantic.embeddings import EMBEDDINGS_DIR, EmbeddingIndex
    from hms_resources.semantic.graph import load_edges
    from hms_resources.semantic.graph_model import memory_node_key
    from hms_resources.tiers.archive import read_cold_archive
    from hms_resources.tiers.assignment import tier_reasons_with_user_text

    home, key = store.home, (user_id, memory_id)
    checks: list[Check] = []

    def check(place: str, clean: bool, ok: str, remains: str) -> None:
        checks.append(Check(place, clean, ok if clean else remains))

    status = store.memory_statuses([key]).get(key)
    check("event log: status", status == "forgotten", "forgotten", f"the memory is {status or 'not in the store'}")
    unerased = store.unerased_events(user_id, memory_id)
    check("event log: payloads", unerased == 0, "every event of the memory is erased", f"{unerased} event(s) still hold what the user said")
    [memory] = store.load_memories([key]).values() or [None]
    held = memory is not None and (memory.content is not None or memory.metadata or memory.context or memory.archive_reason)
    check("memories table", not held, "a tombstone without content" if memory else "no row",
          "the row still holds content: run the memories job")
    concepts = [c.concept_id for c in load_concepts(store, user_id=user_id) if memory_id in c.member_ids or memory_id in c.summary_member_ids]
    check("concepts table", not concepts, "in no concept or summary", f"in concept(s) {', '.join(concepts)}: run concept_clusters")
    node = memory_node_key(user_id, memory_id)
    edges = [e for e in load_edges(store, user_id) if node in (e.source, e.target)]
    check("graph_edges table", not edges, "no edge", f"{len(edges)} edge(s): run graph_edges (and neo4j_graph)")
    index = EmbeddingIndex.load(home / EMBEDDINGS_DIR)
    indexed = index is not None and key in set(index.keys())
    check("embedding index", not indexed, "no vector", "a vector remains: run embeddings")
    reasons = tier_reasons_with_user_text(store, [key])
    check("memory tiers (every day)", reasons == 0, "ids, scores and reasons only (no user text)", f"{reasons} reason(s) quote the user")
    cold = [r for r in read_cold_archive(home / "archive", user_id) if r["memory_id"] == memory_id]
    check("cold archive (Parquet)", not cold, "not archived", "still in the cold archive: run cold_archive_job")
    sets = [s.set_id for s in load_candidate_sets(lora_dir(home)) if s.user_id == user_id and memory_id in s.memory_ids]
    check("LoRA candidate sets", not sets, "in no set", f"in set(s) {', '.join(sets)}: run lora_job")
    holding = [v for v, path in _dataset_versions(home) if key in _dataset_members(path)]
    check("LoRA dataset versions", not holding, "no version holds it", f"held by version(s) {', '.join(holding)}")
    manifest = [s for s, d in training_datasets(home).items() if memory_id in d.get("memory_ids", ()) and d.get("user_id") == user_id]
    check("LoRA training manifest", not manifest, "no current dataset names it", f"named by {', '.join(manifest)}")
    purged = purged_dataset_versions(home)
    stale = [s for s, a in trained_adapters(home).items() if a.get("key", "").split(":")[0] in purged]
    check("LoRA adapters manifest", not stale, "no adapter trained on a purged dataset", f"adapter(s) of {', '.join(stale)} trained on one")
    served = [c["set_id"] for c in load_champions(home) if c.get("dataset_version") in purged or c["set_id"] in stale]
    check("Context.adapter (champions.json)", not served, "no champion trained on a purged dataset",
          f"champion(s) of {', '.join(served)} still served")
    if tracking is not None and tracking.in_use(home):
        registered = _registered_on(tracking, home, purged)
        check("MLflow registry", not registered, "no version trained on a purged dataset", f"{', '.join(registered)} still registered")
    naming = sum(1 for path in _rejects_files(home) for line in path.read_bytes().splitlines()
                 if (record := _rejected_record(line)) is not None and _names_forgotten(record["raw"], {key}))
    check("rejected lines", naming == 0, "no raw line names it", f"{naming} raw line(s) name it")
    clean, detail = store.erased_pages_state()
    checks.append(Check("database files", clean, detail))
    return checks


def _registered_on(tracking: Any, home: Path, versions: set[str]) -> list[str]:
    client = tracking.client(home)
    found = []
    for registered in client.search_registered_models(filter_string="name LIKE 'hms-lora-%'"):
        for version in client.search_model_versions(f"name = '{registered.name}'"):
            if version.tags.get("hms.dataset_version") in versions:
                found.append(f"{registered.name} version {version.version}")
    return found
