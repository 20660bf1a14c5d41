"""The house rules of the layout: data flows one way between domains, the packages never import the
jobs, no runtime file grows past one room, and `hms_resources` exports its resources cheaply."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("hms_resources", "hms_assets", "hms_jobs")
MAX_LINES = 700
LAYERS = {"common": 0, "store": 1, "semantic": 2, "tiers": 3, "context": 4, "lora": 4, "datasets": 5, "privacy": 5, "memory": 6, "integration": 7, "serving": 8}
"""A domain of `hms_resources` imports only domains of a lower layer (and itself): events -> store ->
semantic -> tiers -> context / lora; datasets and privacy sit on top, the door for writes (memory) above
them, then the transports: integration, and serving above it."""
ALLOWED = {("context", "lora.paths"), ("lora", "context.prompt")}
"""The context resource names the champion adapter: it reads the champions file, never the trainer. A
LoRA teacher reads its facts laid out as the served prompt lays them out (`context.prompt`)."""


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", ["hms_resources", "hms_assets"])
def test_the_domain_and_asset_packages_never_import_the_jobs(package):
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in python_files(package) for m in imported_modules(p) if m.split(".")[0] == "hms_jobs"]
    assert offenders == []


def test_domains_import_only_the_domains_below_them():
    offenders = []
    for path in python_files("hms_resources"):
        parts = path.relative_to(ROOT / "hms_resources").parts
        if len(parts) < 2:
            continue
        domain = parts[0]
        for module in imported_modules(path):
            names = module.split(".")
            if names[0] != "hms_resources" or len(names) < 2 or names[1] not in LAYERS or names[1] == domain:
                continue
            if any(module.startswith(f"hms_resources.{allowed}") for d, allowed in ALLOWED if d == domain):
                continue
            if LAYERS[names[1]] >= LAYERS[domain]:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_no_runtime_module_is_longer_than_one_room():
    long = {str(p.relative_to(ROOT)): n for pkg in RUNTIME for p in python_files(pkg) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_resources_are_exported_without_importing_them_all():
    code = (
        "import sys, hms_resources\n"
        "assert 'dagster' not in sys.modules and 'torch' not in sys.modules\n"
        "from hms_resources import ContextAssembler, Embedder, EventStore, GraphStore, MlflowTracking\n"
        "assert EventStore.__module__ == 'hms_resources.store.event_store'\n"
        "import hms_resources.context.assembler\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'mlflow') if m in sys.modules)\n"
        "assert not heavy, f'the query path imports {heavy}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
