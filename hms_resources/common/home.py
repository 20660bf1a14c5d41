"""Where HMS keeps its files: the HMS home (`HMS_HOME`, default `./.hms`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hms_resources.common.environment import setting

__all__ = ["default_database_url", "hms_home", "redact_error", "redact_url"]


def hms_home(configured: str | os.PathLike[str] | None = None) -> Path:
    raw = configured or setting("HMS_HOME")
    return Path(raw).expanduser().resolve()


def default_database_url(home: Path) -> str:
    """The embedded event store: one SQLite file under the HMS home."""
    return f"sqlite:///{home / 'hms.db'}"


_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s'\"<>]*)@")
_SECRET_PARAM = re.compile(
    r"(?P<key>(?:(?<=[?&;\s])|^)[^=&;#\s'\"<>?]*(?:pass|pwd|secret|token|key|credential|signature)[^=&;#\s'\"<>?]*=)"
    r"(?:'[^']*'|\"[^\"]*\"|[^&;#\s'\"<>]*)",
    re.IGNORECASE,
)
MASK = "***"


def redact_url(url: str) -> str:
    """A URL, or any text quoting URLs (an error message), safe to show, log or raise: every password
    replaced by `***`, whatever the scheme (`postgresql://user:***@host/db`, `http://user:***@host:5000`,
    `bolt://neo4j:***@host:7687`), and the value of a secret-like query parameter or libpq keyword too
    (`?password=***`, `&sslpassword=***`, `?token=***`, `password=***` in a connection string).

    The user name is kept. Everything up to a URL's last `@` counts as its credentials, so a password
    with an unescaped `@`, `/` or `?` is hidden whole; a URL without credentials comes back as it was."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _password = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:{MASK}@" if colon else match[0]

    return _SECRET_PARAM.sub(lambda m: m["key"] + MASK, _USERINFO.sub(userinfo, url))


_BEARER = re.compile(r"\b(Bearer|Basic)\s+[^\s'\",;]+", re.IGNORECASE)
_HEADER_SECRET = re.compile(r"(?P<key>\b(?:authorization|proxy-authorization|x-api-key|api[-_]?key|access[-_]?token)[\"']?\s*[:=]\s*[\"']?)"
                            r"(?:(?:Bearer|Basic)\s+)?[^\s'\",;}]+", re.IGNORECASE)
_KEY_LIKE = re.compile(r"\b(sk|pk|rk|xai|gsk|key)-[A-Za-z0-9_*\-]{6,}")
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """`text` (a provider's error) safe to return and log: URL passwords and secret query values
    (`redact_url`), `Authorization`/API-key headers, bearer tokens, key-shaped strings (`sk-...`),
    and the value of every secret-named environment variable (`OPENAI_API_KEY`, ...) wherever it is
    quoted."""
    text = redact_url(text)
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, MASK)
    text = _HEADER_SECRET.sub(lambda m: m["key"] + MASK, text)
    text = _BEARER.sub(lambda m: f"{m[1]} {MASK}", text)
    return _KEY_LIKE.sub(lambda m: f"{m[1]}-{MASK}", text)


def redact_error(error: BaseException) -> BaseException:
    """`error`, its causes and contexts rewritten in place so that none quotes a URL's password
    (MLflow, for one, quotes a failed request's whole URL, credentials included): their arguments and
    text attributes pass through `redact_url`. The type is kept, so callers catch it as before."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            current.args = tuple(redact_url(a) if isinstance(a, str) else a for a in current.args)
            for name, value in list(getattr(current, "__dict__", {}).items()):
                if isinstance(value, str):
                    setattr(current, name, redact_url(value))
                elif name == "__notes__" and isinstance(value, list):
                    value[:] = [redact_url(n) if isinstance(n, str) else n for n in value]
        except (AttributeError, TypeError):  # an extension type with read-only fields: keep what it says
            pass
        pending += [current.__cause__, current.__context__]
    return error
