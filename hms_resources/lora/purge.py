"""Forgetting, for LoRA: dataset versions that hold a forgotten memory are deleted, and every adapter
trained on one is retired (registry versions, artifacts, run, local files, champions)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hms_resources.store.memory_state import MemoryKey

Log = Callable[[str], None]


def dataset_versions(home: Path) -> Iterable[tuple[str, Path]]:
    from hms_resources.lora.adapters import lora_dir

    root = lora_dir(home) / "datasets"
    if root.is_dir():
        for set_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for version_dir in sorted(p for p in set_dir.iterdir() if (p / "dataset_dict.json").exists()):
                yield version_dir.name, version_dir


def dataset_members(path: Path) -> set[MemoryKey]:
    from hms_resources.lora.data import load_examples

    return {(row["user_id"], row["memory_id"]) for rows in load_examples(path).splits().values() for row in rows}


PURGED_DATASETS_FILE = "purged_datasets.json"
"""Dataset versions deleted for holding a forgotten memory: an adapter trained on one is retired
wherever it is registered, even by a run that sees no dataset left to delete."""


def purged_dataset_versions(home: Path) -> set[str]:
    from hms_resources.common.files import read_json
    from hms_resources.lora.adapters import lora_dir

    return set(read_json(lora_dir(home) / PURGED_DATASETS_FILE, []))


def purge_datasets(home: Path, forgotten: set[MemoryKey], log: Log) -> list[str]:
    """Delete every dataset version holding a forgotten memory, and its entry in the training manifest."""
    from hms_resources.common.files import read_json, write_json
    from hms_resources.lora.adapters import TRAINING_DATA_MANIFEST, lora_dir

    deleted = []
    for version, path in dataset_versions(home):
        if dataset_members(path) & forgotten:
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


def retire_adapters(home: Path, versions: set[str], tracking: Any | None, log: Log) -> list[str]:
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
    if not retired:
        return []
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


def registered_on(tracking: Any, home: Path, versions: set[str]) -> list[str]:
    client = tracking.client(home)
    found = []
    for registered in client.search_registered_models(filter_string="name LIKE 'hms-lora-%'"):
        for version in client.search_model_versions(f"name = '{registered.name}'"):
            if version.tags.get("hms.dataset_version") in versions:
                found.append(f"{registered.name} version {version.version}")
    return found
