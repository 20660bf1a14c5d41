"""The cursors of the service's listings (memories, users, a session's turns): opaque to a client, a
version and the id to continue after; anything this module could not have written is a 422 naming
`cursor`, never the first page again."""

from __future__ import annotations

import base64

from hms_resources.common.limits import CONTROL_CHARACTER, MAX_ID_LENGTH
from hms_resources.serving.errors import bad_request

CURSOR_VERSION = "m1."


def page_cursor(memory_id: str) -> str:
    """A listing's `next_cursor`: a version, then the memory id to continue after, in base64url."""
    return CURSOR_VERSION + base64.urlsafe_b64encode(memory_id.encode()).decode().rstrip("=")


def continue_after(cursor: str | None) -> str | None:
    """The memory id a cursor continues after (none for no cursor or an empty one); anything `page_cursor`
    could not have written is a 422 naming `cursor`, never the first page again."""
    if not cursor:
        return None
    refused = bad_request("cursor is not one this service returned: pass a next_cursor back unchanged", "cursor")
    body = cursor[len(CURSOR_VERSION):] if isinstance(cursor, str) and cursor.startswith(CURSOR_VERSION) else None
    if body is None:
        raise refused
    try:
        memory_id = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise refused from None
    if not memory_id or len(memory_id) > MAX_ID_LENGTH or CONTROL_CHARACTER.search(memory_id) or page_cursor(memory_id) != cursor:
        raise refused  # no id holds a control character: such a cursor was not written here
    return memory_id
