"""Where HMS keeps its files: the HMS home (`HMS_HOME`, default `./.hms`)."""

from __future__ import annotations

import os
from pathlib import Path


def hms_home(configured: str | os.PathLike[str] | None = None) -> Path:
    raw = configured or os.environ.get("HMS_HOME") or ".hms"
    return Path(raw).expanduser().resolve()


def default_database_url(home: Path) -> str:
    """The embedded event store: one SQLite file under the HMS home."""
    return f"sqlite:///{home / 'hms.db'}"


def redact_url(url: str) -> str:
    """A database URL safe to log: the password replaced."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def positive_int_from_env(name: str, default: int) -> int:
    """A positive integer setting from the environment, or a clear error naming the variable."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value
