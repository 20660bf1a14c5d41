"""Memory tiers as of the end of a day: hot (working memory), warm (recall) and cold (archive).

Everything here depends only on the events up to the end of the day and the config, so a partition
computed twice, or backfilled in any order or in parallel, gives the same rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Any

import numpy as np

from hms_resources.semantic.concepts import Concept
from hms_resources.store.derived import latest_tiers
from hms_resources.store.event_store import EventStore
from hms_resources.tiers.importance import (
    ARCHIVED,
    COLD,
    HOT,
    TIER_NAMES,
    WARM,
    ImportanceConfig,
    ImportanceFeatures,
    TierConfig,
    assign_tiers,
    score_importance,
)
from hms_resources.tiers.replay import TierInputs, tier_inputs_by_day


@dataclass(frozen=True)
class TieringConfig:
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    tiers: TierConfig = field(default_factory=TierConfig)


@dataclass
class TierSnapshot:
    """Tiers of every memory that is not forgotten, as of `as_of` (UTC text)."""

    as_of: str
    user_ids: list[str]
    memory_ids: list[str]
    scores: np.ndarray
    tiers: np.ndarray
    reasons: list[str]

    @cached_property
    def by_key(self) -> dict[tuple[str, str], tuple[int, float, str]]:
        """Tier, score and reason per memory, built once: a backfill compares each day with the next."""
        return dict(zip(zip(self.user_ids, self.memory_ids), zip(self.tiers.tolist(), self.scores.tolist(), self.reasons)))

    def sizes(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for user_id, tier in zip(self.user_ids, self.tiers.tolist()):
            counts = result.setdefault(user_id, {name: 0 for name in TIER_NAMES})
            counts[TIER_NAMES[tier]] += 1
        return result


def compute_tiers(
    store: EventStore,
    day: date,
    concepts: list[Concept],
    config: TieringConfig = TieringConfig(),
    predict_access: Callable[[ImportanceFeatures], np.ndarray] | None = None,
    users: Callable[[str], bool] | None = None,
) -> TierSnapshot:
    """The tiers of every memory as of the end of `day`."""
    [inputs] = tier_inputs_by_day(store, [day], concepts, config.importance, users)
    return place_in_tiers(inputs, config, predict_access)


def backfill_tiers(
    store: EventStore,
    days: list[date],
    concepts: list[Concept],
    config: TieringConfig = TieringConfig(),
    predict_access: Callable[[ImportanceFeatures], np.ndarray] | None = None,
    users: Callable[[str], bool] | None = None,
) -> Iterator[tuple[date, TierSnapshot, list[TierMigration]]]:
    """Each day's tiers and its migrations from the day before, in date order, from one read of the
    log: a backfill of D days costs one replay, not 2 x D."""
    wanted = set(days)
    needed = wanted | {day - timedelta(days=1) for day in wanted}
    previous: TierSnapshot | None = None
    for inputs in tier_inputs_by_day(store, needed, concepts, config.importance, users):
        snapshot = place_in_tiers(inputs, config, predict_access)
        if inputs.day in wanted:
            yield inputs.day, snapshot, tier_migrations(previous, snapshot)
        previous = snapshot


def place_in_tiers(
    inputs: TierInputs,
    config: TieringConfig = TieringConfig(),
    predict_access: Callable[[ImportanceFeatures], np.ndarray] | None = None,
) -> TierSnapshot:
    """Score every memory and place it in a tier. With `predict_access`, the predicted probability of
    an access in the next week is averaged into the score."""
    n = len(inputs.keys)
    scores = score_importance(inputs.features, config.importance)
    if predict_access is not None and n:
        scores = np.where(inputs.features.pinned, 1.0, (scores + predict_access(inputs.features)) / 2)
    scores = np.round(scores, 6)
    user_ids = inputs.user_ids
    _, user_index = np.unique(np.array(user_ids, dtype=str), return_inverse=True) if n else (None, np.zeros(0, int))
    # Memories the user archived stay archived; the rest compete for the tiers.
    tiers = np.full(n, ARCHIVED, dtype=np.int8)
    active = np.flatnonzero(~inputs.archived)
    tiers[active] = assign_tiers(user_index[active], scores[active], active, inputs.accessed_today[active], config.tiers)
    reasons = [
        _reason(archived, pinned, tier, score, promoted, config.tiers)
        for archived, pinned, tier, score, promoted in zip(
            inputs.archived.tolist(), inputs.features.pinned.tolist(), tiers.tolist(), scores.tolist(), inputs.accessed_today.tolist()
        )
    ]
    return TierSnapshot(inputs.as_of, user_ids, inputs.memory_ids, scores, tiers, reasons)


def _reason(archived: bool, pinned: bool, tier: int, score: float, accessed_today: bool, config: TierConfig) -> str:
    if archived:
        return ARCHIVED_BY_USER
    if pinned and tier == HOT:
        return "pinned"
    if tier == HOT:
        return f"score {score:.3f} at or above {config.hot_threshold}"
    if tier == WARM:
        if score >= config.hot_threshold:
            return f"hot tier full ({config.hot_capacity} per user)"
        if score < config.warm_threshold and accessed_today:
            return "accessed while cold: promoted"
        return f"score {score:.3f} below {config.hot_threshold}"
    if tier == COLD:
        if score >= config.warm_threshold:
            return f"warm tier full ({config.warm_capacity} per user)"
        return f"score {score:.3f} below {config.warm_threshold}"
    return f"beyond cold capacity ({config.cold_capacity} per user)"


@dataclass(frozen=True)
class TierMigration:
    user_id: str
    memory_id: str
    from_tier: str | None
    to_tier: str | None
    score: float | None
    score_change: float | None
    reason: str


def tier_migrations(previous: TierSnapshot, current: TierSnapshot) -> list[TierMigration]:
    """Every memory whose tier changed between two snapshots; new memories come from None, and
    forgotten ones go to None (they leave every tier)."""
    before = previous.by_key
    after = current.by_key
    changed = [key for key, new in after.items() if (old := before.get(key)) is None or old[0] != new[0]]
    changed += [key for key in before if key not in after]
    moves = []
    for key in sorted(changed):
        old = before.get(key)
        new = after.get(key)
        reason = new[2] if new else "forgotten: leaves every tier"
        change = new[1] - old[1] if old and new else None
        moves.append(
            TierMigration(
                key[0], key[1], TIER_NAMES[old[0]] if old else None, TIER_NAMES[new[0]] if new else None, new[1] if new else None, change, reason
            )
        )
    return moves


def save_tier_partition(
    store: EventStore,
    day: date,
    snapshot: TierSnapshot,
    moves: list[TierMigration],
    users: Callable[[str], bool] | None = None,
) -> None:
    """Replace one day's tiers and migrations in one transaction: re-running a day is idempotent. With
    `users` (a shard), only the rows of the users it accepts are replaced; other shards' rows stay."""
    from sqlalchemy import select

    from hms_resources.store.schema import memory_tiers
    from hms_resources.store.schema import tier_migrations as migrations_table

    key = day.isoformat()
    tier_rows = [
        {"partition_date": key, "user_id": u, "memory_id": m, "tier": TIER_NAMES[t], "score": float(s), "reason": r}
        for u, m, t, s, r in zip(snapshot.user_ids, snapshot.memory_ids, snapshot.tiers.tolist(), snapshot.scores.tolist(), snapshot.reasons)
    ]
    move_rows = [
        {
            "partition_date": key,
            "user_id": mv.user_id,
            "memory_id": mv.memory_id,
            "from_tier": mv.from_tier,
            "to_tier": mv.to_tier,
            "score": mv.score,
            "reason": mv.reason,
            "at": snapshot.as_of,
        }
        for mv in moves
    ]
    with store.writing() as conn:
        for table in (memory_tiers, migrations_table):
            of_day = table.c.partition_date == key
            if users is None:
                conn.execute(table.delete().where(of_day))
                continue
            present = [u for (u,) in conn.execute(select(table.c.user_id).where(of_day).distinct()) if users(u)]
            for start in range(0, len(present), 500):
                conn.execute(table.delete().where(of_day, table.c.user_id.in_(present[start : start + 500])))
        for start in range(0, len(tier_rows), 5000):
            conn.execute(memory_tiers.insert(), tier_rows[start : start + 5000])
        if move_rows:
            conn.execute(migrations_table.insert(), move_rows)


def latest_tier_date(store: EventStore) -> str | None:
    from sqlalchemy import func, select

    from hms_resources.store.schema import memory_tiers

    with store.reading() as conn:
        return conn.execute(select(func.max(memory_tiers.c.partition_date))).scalar()


def tier_sizes(store: EventStore, partition_date: str | None = None) -> dict[str, dict[str, int]]:
    """Per user, memories per tier in a partition (the latest by default)."""
    from sqlalchemy import func, select

    from hms_resources.store.schema import memory_tiers

    partition_date = partition_date or latest_tier_date(store)
    if partition_date is None:
        return {}
    query = (
        select(memory_tiers.c.user_id, memory_tiers.c.tier, func.count())
        .where(memory_tiers.c.partition_date == partition_date)
        .group_by(memory_tiers.c.user_id, memory_tiers.c.tier)
    )
    sizes: dict[str, dict[str, int]] = {}
    with store.reading() as conn:
        for user_id, tier, count in conn.execute(query):
            sizes.setdefault(user_id, {name: 0 for name in TIER_NAMES})[tier] = count
    return sizes


def current_tiers(store: EventStore, user_id: str | None = None) -> dict[tuple[str, str], str]:
    """The tier of every memory in the latest partition: what the context resource searches."""
    return {key: tier for key, (tier, _) in latest_tiers(store, user_id).items()}


def current_importance(store: EventStore, user_id: str | None = None) -> dict[tuple[str, str], float]:
    """The dynamic importance (tier score) of every memory in the latest partition."""
    return {key: score for key, (_, score) in latest_tiers(store, user_id).items()}


def new_live_memories_since(store: EventStore, as_of: str) -> dict[str, int]:
    """Per user, live memories created after `as_of`: they join the working set before the next migration."""
    from sqlalchemy import func, select

    from hms_resources.store.schema import memories

    query = (
        select(memories.c.user_id, func.count())
        .where(
            memories.c.created_at > as_of,
            memories.c.is_archived.is_(False),
            memories.c.is_forgotten.is_(False),
        )
        .group_by(memories.c.user_id)
    )
    with store.reading() as conn:
        return dict(conn.execute(query).all())


ARCHIVED_BY_USER = "archived by the user"
"""The reason the user gave stays with the memory: tier rows and their metadata outlive a forget."""
ERASED_ARCHIVE_REASON = "archived by the user (reason erased: the memory was forgotten)"


def _user_text_reasons(table: Any, keys: list[tuple[str, str]]) -> Any:
    """Rows of `keys` whose reason quotes the reason the user gave for archiving, as tier migrations
    before 2026-12 wrote it ("archived by the user: <reason>")."""
    from sqlalchemy import and_, tuple_

    return and_(
        tuple_(table.c.user_id, table.c.memory_id).in_(keys),
        table.c.reason.like("archived by the user: %"),
        table.c.reason != "archived by the user: no reason given",
    )


def erase_tier_reasons(store: EventStore, keys: set[tuple[str, str]]) -> int:
    """Past days' tiers keep forgotten memories' rows (history stays), without the user's words."""
    from hms_resources.store.schema import memory_tiers, tier_migrations

    erased = 0
    with store.writing() as conn:
        for table in (memory_tiers, tier_migrations):
            for chunk in _key_chunks(keys):
                erased += conn.execute(table.update().where(_user_text_reasons(table, chunk)).values(reason=ERASED_ARCHIVE_REASON)).rowcount
    return erased


def tier_reasons_with_user_text(store: EventStore, keys: list[tuple[str, str]]) -> int:
    from sqlalchemy import func, select

    from hms_resources.store.schema import memory_tiers, tier_migrations

    with store.reading() as conn:
        return sum(
            conn.execute(select(func.count()).select_from(table).where(_user_text_reasons(table, chunk))).scalar() or 0
            for table in (memory_tiers, tier_migrations)
            for chunk in _key_chunks(keys)
        )


def _key_chunks(keys: Any, size: int = 400) -> list[list[tuple[str, str]]]:
    ordered = sorted(keys)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]
