"""No secret in any repr, log line, metadata value or error: every URL shown is masked.

Each test uses a password found nowhere else, so that finding it anywhere is a leak."""

from __future__ import annotations

import socket
import traceback
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value
from sqlalchemy.engine import make_url

from hms_assets import domain_assets
from hms_jobs.resources import resources
from hms_resources.common.home import redact_error, redact_url
from hms_resources.context.assembler import ContextAssembler
from hms_resources.datasets import SAMPLE_EVENTS
from hms_resources.lora.tracking import MlflowTracking, TrackingUnavailable
from hms_resources.semantic.embedder import Embedder
from hms_resources.semantic.graph_store import GraphStore
from hms_resources.store.event_store import EventStore, StoreError
from hms_resources.store.ingest import ingest_path

SECRET = "Sup3rSecretPw"
PG_URL = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"
HTTP_URL = f"http://u:{SECRET}@127.0.0.1:5000"
BOLT_URL = f"bolt://neo4j:{SECRET}@127.0.0.1:7687"

ASSETS = domain_assets(["memory_store"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shown(value: object) -> list[str]:
    """Every way a resource is turned into text by Python, pydantic, rich or a log line."""
    from rich.pretty import pretty_repr

    return [repr(value), str(value), f"{value!r}", f"{value}", "%s %r" % (value, value), pretty_repr(value)]


def with_password(url: str) -> str:
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def everything_said(error: BaseException) -> str:
    """The error as a traceback shows it, causes and contexts included (what Dagster stores)."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


# The one masking function -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (PG_URL, "postgresql://postgres:***@127.0.0.1:5432/test"),
        (f"postgresql+psycopg2://u:{SECRET}@db.example:5432/hms?sslmode=require", "postgresql+psycopg2://u:***@db.example:5432/hms?sslmode=require"),
        (HTTP_URL, "http://u:***@127.0.0.1:5000"),
        (f"https://u:{SECRET}@mlflow.example/path?x=1", "https://u:***@mlflow.example/path?x=1"),
        (BOLT_URL, "bolt://neo4j:***@127.0.0.1:7687"),
        (f"postgresql://u:p%40{SECRET}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://u:a@b/{SECRET}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://u@h/db?password={SECRET}&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        (f"postgresql://u@h/db?sslmode=require&sslpassword={SECRET}", "postgresql://u@h/db?sslmode=require&sslpassword=***"),
        (f"https://mlflow.example/?token={SECRET}", "https://mlflow.example/?token=***"),
        (f"host=h user=u password={SECRET} dbname=x", "host=h user=u password=*** dbname=x"),
        (f"API request to {HTTP_URL}/api/2.0/x failed", "API request to http://u:***@127.0.0.1:5000/api/2.0/x failed"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("sqlite:////tmp/hms/hms.db", "sqlite:////tmp/hms/hms.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("HMS_DATABASE_URL", "HMS_DATABASE_URL"),
        ("", ""),
    ],
)
def test_redact_url_masks_the_password_of_any_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert SECRET not in redact_url(url)


def test_redact_error_rewrites_the_whole_chain_and_keeps_the_type() -> None:
    class DriverError(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.message = message

    try:
        try:
            raise ConnectionError(f"cannot reach {HTTP_URL}")
        except ConnectionError as cause:
            raise DriverError(f"request to {HTTP_URL}/api failed") from cause
    except DriverError as error:
        assert redact_error(error) is error
        caught = error
    assert isinstance(caught, DriverError)
    assert caught.message == str(caught) == "request to http://u:***@127.0.0.1:5000/api failed"
    assert SECRET not in everything_said(caught)


# Reprs of every resource ------------------------------------------------------------------------


def secret_resources() -> dict[type, object]:
    store = EventStore(database_url=PG_URL)
    embedder = Embedder()
    return {
        EventStore: store,
        Embedder: embedder,
        ContextAssembler: ContextAssembler(event_store=store, embedder=embedder),
        MlflowTracking: MlflowTracking(tracking_uri=HTTP_URL),
        GraphStore: GraphStore(uri=BOLT_URL, password=SECRET),
    }


def test_no_resource_repr_shows_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMS_DATABASE_URL", PG_URL)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", HTTP_URL)
    monkeypatch.setenv("NEO4J_URI", BOLT_URL)
    monkeypatch.setenv("NEO4J_PASSWORD", SECRET)
    configured = resources()
    built = secret_resources()
    assert {type(r) for r in configured.values()} <= set(built), "a new resource: add it to secret_resources()"
    for resource in [*configured.values(), *built.values(), MlflowTracking(tracking_uri=PG_URL)]:
        for text in shown(resource):
            assert SECRET not in text, text
    assert "postgresql://postgres:***@127.0.0.1:5432/test" in repr(built[ContextAssembler])
    assert "http://u:***@127.0.0.1:5000" in repr(built[MlflowTracking])
    # The UI and run config see the environment variable's name, never its value.
    assert configured["event_store"].database_url == "HMS_DATABASE_URL"
    assert configured["mlflow_tracking"].tracking_uri == "MLFLOW_TRACKING_URI"


# A whole run, and the error paths ---------------------------------------------------------------


def run_memories(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS, resources=resources(), instance=instance, raise_on_error=False)


def assert_run_keeps_the_secret(instance: dg.DagsterInstance, run_id: str) -> None:
    records = instance.all_logs(run_id)
    assert records
    for record in records:
        assert SECRET not in str(record)
        assert SECRET not in serialize_value(record)
        assert SECRET not in record.message and SECRET not in record.user_message
    run = instance.get_run_by_id(run_id)
    assert SECRET not in str(run.run_config) and SECRET not in serialize_value(run)
    assert SECRET not in serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
    assert SECRET not in serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))


def test_a_run_on_postgresql_logs_no_password(hms_home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = with_password(postgres_url)
    assert SECRET in url
    monkeypatch.setenv("HMS_DATABASE_URL", url)
    store = EventStore.from_env()
    try:
        assert ingest_path(store, SAMPLE_EVENTS).accepted > 0
    finally:
        store.close()
    with dg.instance_for_test() as instance:
        result = run_memories(instance)
        assert result.success
        assert_run_keeps_the_secret(instance, result.run_id)
        metadata = instance.get_latest_materialization_event(dg.AssetKey("memories")).asset_materialization.metadata
    assert metadata["store"].value == redact_url(url) == make_url(url).render_as_string(hide_password=True)
    assert ":***@" in metadata["store"].value


def test_an_unreachable_store_never_says_its_password(hms_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://hms:{SECRET}@127.0.0.1:{closed_port()}/x"
    store = EventStore(database_url=url)
    with pytest.raises(StoreError) as caught:
        store.stats()
    assert "postgresql://hms:***@127.0.0.1:" in str(caught.value)
    assert SECRET not in everything_said(caught.value)
    monkeypatch.setenv("HMS_DATABASE_URL", url)
    with dg.instance_for_test() as instance:
        result = run_memories(instance)
        assert not result.success
        assert_run_keeps_the_secret(instance, result.run_id)


def test_an_unreachable_tracking_server_never_says_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracking = MlflowTracking(tracking_uri=f"http://u:{SECRET}@127.0.0.1:{closed_port()}")
    with pytest.raises(TrackingUnavailable) as caught:
        tracking.experiment_id(tmp_path)
    assert "http://u:***@127.0.0.1:" in str(caught.value)
    assert SECRET not in everything_said(caught.value)
    client = tracking.client(tmp_path)
    assert SECRET not in repr(client)
    with pytest.raises(MlflowException) as caught:
        client.search_registered_models()
    assert "http://u:***@127.0.0.1:" in str(caught.value)
    assert SECRET not in everything_said(caught.value) and SECRET not in caught.value.serialize_as_json()
