"""What a query says about time: a window ("in mid-March", "last week", "3 days ago", "on 2026-03-08"),
an anchor event ("on the day I mentioned my mother's visit") and an order ("the first book", "most
recently"). Retrieval favours memories inside the window or on the anchor's day, and the earliest or
latest of the relevant ones; the words that only locate the question in time are left out of its
lexical match, so "April" in "in mid-April" does not pull in every memory that mentions April."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name and name != "May"})
WEEKDAYS = {name.lower(): number for number, name in enumerate(calendar.day_name)}
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}

_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY = "|".join(WEEKDAYS)
_PART = r"early|mid|late|the (?:start|beginning|middle|end) of"
_ORDINAL = r"(\d{1,2})(?:st|nd|rd|th)?"

_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DAY_MONTH = re.compile(rf"\b(?:on\s+)?(?:the\s+)?{_ORDINAL}\s+(?:of\s+)?({_MONTH})\b(?:,?\s+(\d{{4}}))?", re.I)
_MONTH_DAY = re.compile(rf"\b(?:on\s+)?({_MONTH})\s+{_ORDINAL}\b(?:,?\s+(\d{{4}}))?", re.I)
# A bare month must follow a preposition or a part of the month, so that "May I ask" is no date.
_MONTH_PART = re.compile(
    rf"\b(?:(?:in|during|around|since|from|of|at)\s+)?(?:({_PART})[\s-]*)({_MONTH})\b(?:\s+(\d{{4}}))?"
    rf"|\b(?:in|during|around|since|from|of)\s+({_MONTH})\b(?:\s+(\d{{4}}))?",
    re.I,
)
_AGO = re.compile(r"\b(\d+|an?|one|two|three|four|five|six|seven|eight|nine|ten)\s+(day|week|month)s?\s+ago\b", re.I)
_RELATIVE = re.compile(r"\b(yesterday|today|this morning|tonight|(?:last|this|past)\s+(?:week|month|weekend))\b", re.I)
_WEEKDAY_RE = re.compile(rf"\b(?:(?:on|last)\s+)({_WEEKDAY})\b", re.I)
_ANCHOR = re.compile(r"\b(?:on\s+)?the\s+(?:same\s+)?day\s+(?:that\s+|when\s+)?(?:i|we)\s+(.+?)[?.!]*$", re.I)
_EARLIEST = re.compile(r"\b(first|earliest|originally|initially|to begin with)\b", re.I)
_LATEST = re.compile(r"\b(most recent(?:ly)?|latest|last|lately)\b", re.I)

DAY = timedelta(days=1)
_TIME_WORDS = re.compile(
    rf"\b(?:yesterday|today|tonight|tomorrow|last|next|ago|weeks?|weekends?|months?|years?|recently|lately|"
    rf"{_WEEKDAY}|{_MONTH}|\d{{4}}|\d{{1,2}}(?:st|nd|rd|th)|\d{{1,2}}(?::\d\d)?\s?[ap]m)\b",
    re.I,
)


def mentions_time(text: str) -> bool:
    """Whether a memory says when something happened ("yesterday", "last week", "in May", "2022"): the
    turns that answer a question about when."""
    return bool(_TIME_WORDS.search(text))


@dataclass(frozen=True)
class TimeScope:
    start: float | None = None
    """Epoch seconds; the window is [start, end)."""
    end: float | None = None
    anchor: str = ""
    """Words naming an event: the question is about what else was said that day."""
    order: str = ""
    """"earliest", "latest" or ""."""
    focus: str = ""
    """The query without the words that only locate it in time."""

    @property
    def has_window(self) -> bool:
        return self.start is not None


def _month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=timezone.utc)


def _last_before(now: datetime, month: int, year: str | None) -> int:
    """The year of the latest `month` that is not after `now`, unless a year is given."""
    if year:
        return int(year)
    return now.year if month <= now.month else now.year - 1


def _month_window(now: datetime, month: int, year: str | None, part: str | None) -> tuple[datetime, datetime]:
    start = _month_start(_last_before(now, month, year), month)
    days = calendar.monthrange(start.year, month)[1]
    part = (part or "").lower()
    if part in ("early", "the start of", "the beginning of"):
        return start, start + 10 * DAY
    if part in ("mid", "the middle of"):
        return start + 10 * DAY, start + 20 * DAY
    if part in ("late", "the end of"):
        return start + 20 * DAY, start + days * DAY
    return start, start + days * DAY


def _day(value: datetime) -> tuple[datetime, datetime]:
    start = value.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + DAY


def _relative(now: datetime, phrase: str) -> tuple[datetime, datetime]:
    phrase = " ".join(phrase.lower().split())
    today, _ = _day(now)
    if phrase == "yesterday":
        return today - DAY, today
    if phrase in ("today", "this morning", "tonight"):
        return today, today + DAY
    unit = phrase.split()[-1]
    if unit == "weekend":
        saturday = today - timedelta(days=(today.weekday() - 5) % 7)
        if phrase.startswith("this") and today.weekday() < 5:
            saturday += 7 * DAY
        return saturday, saturday + 2 * DAY
    if unit == "week":
        monday = today - timedelta(days=today.weekday())
        if phrase.startswith("last"):
            return monday - 7 * DAY, monday
        return (monday, today + DAY) if phrase.startswith("this") else (today - 7 * DAY, today + DAY)
    first = today.replace(day=1)
    if phrase.startswith("last"):
        previous = (first - DAY).replace(day=1)
        return previous, first
    return (first, today + DAY) if phrase.startswith("this") else (today - 30 * DAY, today + DAY)


def _ago(now: datetime, count: str, unit: str) -> tuple[datetime, datetime]:
    n = int(count) if count.isdigit() else NUMBERS[count.lower()]
    days = {"day": 1, "week": 7, "month": 30}[unit.lower()] * n
    centre, _ = _day(now - timedelta(days=days))
    spread = timedelta(days=max(1, days // 4))
    return centre - spread, centre + spread + DAY


def parse_time_scope(query: str, now: datetime) -> TimeScope:
    """Read the window, anchor and order a query states, relative to `now` (timezone-aware)."""
    window: tuple[datetime, datetime] | None = None
    spans: list[tuple[int, int]] = []

    def found(match: re.Match[str], value: tuple[datetime, datetime]) -> None:
        nonlocal window
        if window is None:
            window = value
        spans.append(match.span())

    anchor = ""
    match = _ANCHOR.search(query)
    if match:
        anchor = match.group(1).strip()
        spans.append(match.span())
    for match in _ISO_DAY.finditer(query):
        try:
            found(match, _day(datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=timezone.utc)))
        except ValueError:
            continue
    for pattern, day_group, month_group in ((_DAY_MONTH, 1, 2), (_MONTH_DAY, 2, 1)):
        for match in pattern.finditer(query):
            month = MONTHS[match[month_group].lower()]
            year = _last_before(now, month, match[3])
            try:
                found(match, _day(datetime(year, month, int(match[day_group]), tzinfo=timezone.utc)))
            except ValueError:
                continue
    for match in _MONTH_PART.finditer(query):
        if any(a <= match.start() < b for a, b in spans):
            continue
        if match[2]:
            found(match, _month_window(now, MONTHS[match[2].lower()], match[3], match[1]))
        else:
            found(match, _month_window(now, MONTHS[match[4].lower()], match[5], None))
    for match in _AGO.finditer(query):
        found(match, _ago(now, match[1], match[2]))
    for match in _RELATIVE.finditer(query):
        found(match, _relative(now, match[1]))
    for match in _WEEKDAY_RE.finditer(query):
        today, _ = _day(now)
        back = (today.weekday() - WEEKDAYS[match[1].lower()]) % 7 or 7
        found(match, _day(today - timedelta(days=back)))

    rest = query
    for start, end in sorted(spans, reverse=True):
        rest = rest[:start] + " " + rest[end:]
    order = "earliest" if _EARLIEST.search(rest) else "latest" if _LATEST.search(rest) else ""
    if not (window or anchor or order):
        return TimeScope(focus=query)
    if anchor:
        rest = f"{rest} {anchor}"
    start, end = window if window else (None, None)
    return TimeScope(
        start=start.timestamp() if start else None,
        end=end.timestamp() if end else None,
        anchor=anchor,
        order=order,
        focus=" ".join(rest.split()),
    )
