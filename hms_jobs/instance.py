"""The Dagster instance HMS runs on: `$DAGSTER_HOME`, by default `$HMS_HOME/dagster`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hms_resources.common.environment import setting
from hms_resources.common.home import hms_home

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_INSTANCE = PROJECT_ROOT / "dagster.yaml"
POSTGRES_INSTANCE = Path(__file__).resolve().parent / "dagster_postgres.yaml"
WORKSPACE = PROJECT_ROOT / "workspace.yaml"


def prepare_dagster_home(*, postgres: bool = False, replace: bool = False) -> Path:
    """Point `DAGSTER_HOME` at a folder holding the instance config, creating it if missing."""
    home = Path(setting("DAGSTER_HOME") or hms_home() / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if replace or not config.exists():
        shutil.copyfile(POSTGRES_INSTANCE if postgres else EMBEDDED_INSTANCE, config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
