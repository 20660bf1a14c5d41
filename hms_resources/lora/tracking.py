"""MLflow for LoRA adapters: a SQLite-backed tracking store and artifact folder under the HMS home
by default, or the tracking server named by `MLFLOW_TRACKING_URI`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from hms_resources.common.home import redact_error, redact_url

EXPERIMENT = "hms-lora"
MLFLOW_DIR = "mlflow"
SCHEMA_LOGGERS = ("mlflow.store.db.utils", "alembic")
"""They announce at INFO each table MLflow creates or migrates in its store: noise on every first start."""


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached; the message names it without credentials."""


class _RedactingClient:
    """An `MlflowClient` whose errors never quote the tracking URI's credentials: MLflow puts the whole
    URL of a failed request, user and password included, in its message, which Dagster would log."""

    def __init__(self, client: Any, shown_as: str) -> None:
        self._client = client
        self._shown_as = shown_as

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except Exception as exc:
                redact_error(exc)
                raise

        return call

    def __repr__(self) -> str:
        return f"<MlflowClient {self._shown_as}>"


def _quiet_schema_loggers() -> None:
    for name in SCHEMA_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))


class MlflowTracking(dg.ConfigurableResource):
    """Where adapter runs, metrics, artifacts and registered versions live."""

    tracking_uri: str = ""
    """Empty: `sqlite:///<HMS home>/mlflow/mlflow.db`, with artifacts beside it."""
    experiment: str = EXPERIMENT

    @classmethod
    def from_env(cls) -> "MlflowTracking":
        from hms_resources.common.environment import from_environment

        return from_environment(cls)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "tracking_uri" and isinstance(value, str) else value)

    def in_use(self, home: Path) -> bool:
        """A tracking server is configured, or the embedded store exists: there may be runs to look at."""
        return bool(self.tracking_uri) or (Path(home) / MLFLOW_DIR / "mlflow.db").exists()

    def uri(self, home: Path) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        (Path(home) / MLFLOW_DIR).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(Path(home) / MLFLOW_DIR / 'mlflow.db').resolve()}"

    def client(self, home: Path) -> Any:
        from mlflow import MlflowClient

        uri = self.uri(home)
        _quiet_schema_loggers()
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        except Exception as exc:
            redact_error(exc)
            raise
        shown_as = redact_url(uri)
        return client if shown_as == uri else _RedactingClient(client, shown_as)

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
            raise TrackingUnavailable(f"MLflow tracking server {redact_url(self.tracking_uri)} is unreachable: {type(exc).__name__}") from exc

    def comparison_experiment_id(self, home: Path) -> str:
        """Where every evaluation of the adapter comparison is a run with the same metric keys."""
        return self.experiment_id(home, f"{self.experiment}-comparison")
