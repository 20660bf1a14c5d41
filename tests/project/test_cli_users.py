"""The CLI names users as the API does: the tenant's own name (`maya`) with `--tenant` (default
`local`), or `local/maya`; an unknown user is refused in one line naming the nearest known ones."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hms_jobs.cli import main
from hms_jobs.cli.run import ui_command
from hms_resources.lora.candidates import load_curation
from hms_resources.store.event_store import EventStore
from tests.helpers import created

ROOT = Path(__file__).resolve().parents[2]


def hms(*args: str):
    return CliRunner().invoke(main, list(args))


def ingest(tmp_path: Path, records: list[dict], *args: str):
    path = tmp_path / f"events-{len(list(tmp_path.glob('events-*')))}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return hms("ingest", str(path), "--json", *args)


@pytest.fixture
def maya_home(hms_home: Path, tmp_path: Path) -> Path:
    """`maya` and `mateo` ingested with the default tenant, as `hms ingest` does after `hms run`."""
    result = ingest(tmp_path, [created("maya", "m-1", "Maya is allergic to peanuts."), created("mateo", "m-1", "Mateo runs.")])
    assert result.exit_code == 0, result.output
    return hms_home


def stored_users(home: Path) -> list[str]:
    store = EventStore(hms_home=str(home))
    try:
        return [user for user, _ in store.users_under("", limit=100, include_forgotten=True)]
    finally:
        store.close()


def test_hms_ingest_stores_a_files_users_under_the_local_tenant_by_default(maya_home, tmp_path):
    assert stored_users(maya_home) == ["local/mateo", "local/maya"]
    again = ingest(tmp_path, [created("local/maya", "m-2", "Maya bakes."), created("globex/maya", "m-3")])
    assert again.exit_code == 2, again.output
    assert json.loads(again.stdout.splitlines()[-1])["accepted"] == 1
    assert "user_id 'globex/maya' names another tenant's user; this file is stored under 'local/'" in again.output
    assert stored_users(maya_home) == ["local/mateo", "local/maya"], "an id already under the tenant is not prefixed twice"


def test_hms_ingest_with_an_empty_tenant_keeps_the_ids_as_written(hms_home, tmp_path):
    result = ingest(tmp_path, [created("ana", "m-1")], "--tenant", "")
    assert result.exit_code == 0, result.output
    assert stored_users(hms_home) == ["ana"]
    assert "REMAINS" in hms("forget", "--verify", "--tenant", "", "ana", "m-1").output, "found by its stored id"
    bad = ingest(tmp_path, [created("ana", "m-2")], "--tenant", "Not A Tenant")
    assert bad.exit_code == 2 and "Invalid value for --tenant: a tenant name is" in bad.output and stored_users(hms_home) == ["ana"]


def test_hms_forget_finds_the_users_memory_by_the_apis_name(maya_home):
    verified = hms("forget", "--verify", "maya", "m-1")
    assert verified.exit_code == 2 and "REMAINS" in verified.output, "a live memory is found, and remains"
    forgot = hms("forget", "--json", "maya", "m-1")
    assert forgot.exit_code == 0, forgot.output
    assert "forgot 'm-1' of 'maya'" in forgot.output
    store = EventStore(hms_home=str(maya_home))
    statuses = store.memory_statuses([("local/maya", "m-1"), ("local/mateo", "m-1")])
    forget_events = [e for e in store.read_events() if e.type == "memory.forgotten"]
    store.close()
    assert statuses == {("local/maya", "m-1"): "forgotten", ("local/mateo", "m-1"): "live"}
    assert [(e.user_id, e.event_id.startswith("local/forget-")) for e in forget_events] == [("local/maya", True)]
    assert hms("forget", "--verify", "local/maya", "m-1").exit_code == 0, "`local/maya` is the same user"


def test_an_unknown_user_is_refused_in_one_line_naming_the_nearest(maya_home):
    typo = hms("forget", "--verify", "mya", "m-1")
    assert typo.exit_code == 2
    assert "tenant 'local' has no user 'mya'; nearest: maya" in typo.output and "Traceback" not in typo.output
    other_tenant = hms("forget", "--verify", "--tenant", "acme", "maya", "m-1")
    assert other_tenant.exit_code == 2 and "tenant 'acme' has no user 'maya'; tenant 'acme' has no users yet" in other_tenant.output
    raw = hms("forget", "--verify", "--tenant", "", "maya", "m-1")
    assert raw.exit_code == 2 and "the store has no user 'maya'; nearest: local/maya" in raw.output
    missing = hms("forget", "--verify", "maya", "m-404")
    assert missing.exit_code == 1 and "no memory 'm-404' of user 'maya'" in missing.output


def test_another_tenants_user_is_refused(maya_home):
    result = hms("forget", "--verify", "other/maya", "m-1")
    assert result.exit_code == 2 and "names another tenant's user" in result.output
    curated = hms("curate", "approve", "--memory", "other/maya", "m-1")
    assert curated.exit_code == 2 and "names another tenant's user" in curated.output


def test_hms_curate_takes_the_apis_names_for_memories(maya_home):
    assert hms("curate", "reject", "--memory", "maya", "m-1").exit_code == 0
    assert load_curation(maya_home).rejected_memories == {("local/maya", "m-1")}
    unknown = hms("curate", "reject", "--memory", "maia", "m-1")
    assert unknown.exit_code == 2 and "nearest: maya" in unknown.output
    assert load_curation(maya_home).rejected_memories == {("local/maya", "m-1")}, "a refused command changes nothing"


def test_the_ui_hint_fits_how_hms_was_installed(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert ui_command(".venv/bin/hms") == "make ui", "a checkout has the Makefile's target"
    monkeypatch.chdir(tmp_path)
    assert ui_command("/opt/venv/bin/hms") == "/opt/venv/bin/hms ui"
