"""HMS's assets and checks, one subpackage per domain, listed in the order data flows through them.

The definitions, the retrieval harness and the tests all load domains through `domain_assets`, so a
new module in a domain's folder is picked up everywhere at once."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from types import ModuleType

import dagster as dg

DOMAINS = ("memory_store", "semantic", "tiers", "lora")
GRAPH_SYNC_MODULE = f"{__name__}.semantic.neo4j_graph"
"""Loaded only when a graph store is configured: its asset needs the `graph_store` resource."""


def domain_modules(domains: Sequence[str] = DOMAINS, *, graph_sync: bool = False) -> list[ModuleType]:
    unknown = sorted(set(domains) - set(DOMAINS))
    if unknown:
        raise ValueError(f"unknown asset domain(s) {unknown}; known: {list(DOMAINS)}")
    modules = []
    for domain in DOMAINS:
        if domain not in domains:
            continue
        package = importlib.import_module(f"{__name__}.{domain}")
        for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            if graph_sync or info.name != GRAPH_SYNC_MODULE:
                modules.append(importlib.import_module(info.name))
    return modules


def domain_assets(domains: Sequence[str] = DOMAINS, *, graph_sync: bool = False) -> list[dg.AssetsDefinition]:
    """The assets and asset checks of `domains`, ready for `Definitions(assets=...)` or `materialize`: a
    module's asset definitions, and those its `build_assets()` builds now (assets whose partitions the
    environment sets, read when the definitions are built rather than when the module is imported)."""
    modules = domain_modules(domains, graph_sync=graph_sync)
    built = [asset for module in modules if hasattr(module, "build_assets") for asset in module.build_assets()]
    return [*dg.load_assets_from_modules(modules), *built, *dg.load_asset_checks_from_modules(modules)]
