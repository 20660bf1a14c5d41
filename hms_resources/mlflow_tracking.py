"""MLflow for LoRA adapters: a SQLite-backed tracking store and artifact folder under the HMS home
by default, or the tracking server named by `MLFLOW_TRACKING_URI`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagster as dg

EXPERIMENT = "hms-lora"
MLFLOW_DIR = "mlflow"


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached; the message names it without credentials."""


def masked(uri: str) -> str:
    return re.sub(r"//[^/@]+@", "//***@", uri)


class MlflowTracking(dg.ConfigurableResource):
    """Where adapter runs, metrics, artifacts and registered versions live."""

    tracking_uri: str = ""
    """Empty: `sqlite:///<HMS home>/mlflow/mlflow.db`, with artifacts beside it."""
    experiment: str = EXPERIMENT

    def uri(self, home: Path) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        (Path(home) / MLFLOW_DIR).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(Path(home) / MLFLOW_DIR / 'mlflow.db').resolve()}"

    def client(self, home: Path) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri(home), registry_uri=self.uri(home))

    def experiment_id(self, home: Path, name: str = "") -> str:
        """The experiment (default: adapter training), created on first use; artifacts live under the
        HMS home for the embedded store."""
        client = self.client(home)
        name = name or self.experiment
        try:
            found = client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            location = None if self.tracking_uri else (Path(home) / MLFLOW_DIR / "artifacts" / name).resolve().as_uri()
            return client.create_experiment(name, artifact_location=location)
        except Exception as exc:  # noqa: BLE001 - any transport or server error means the same to the caller
            if not self.tracking_uri:
                raise
            raise TrackingUnavailable(f"MLflow tracking server {masked(self.tracking_uri)} is unreachable: {type(exc).__name__}") from exc

    def comparison_experiment_id(self, home: Path) -> str:
        """Where every evaluation of the adapter comparison is a run with the same metric keys."""
        return self.experiment_id(home, f"{self.experiment}-comparison")
