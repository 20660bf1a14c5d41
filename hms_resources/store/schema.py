"""Tables of the HMS store. Alembic migrations (`hms_resources/store/migrations`) create and change them;
these definitions are what the queries are written against."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from hms_resources.common.limits import MAX_ID_LENGTH, MAX_MEMORY_TYPE_LENGTH, MAX_NAME_LENGTH

metadata = MetaData()

# On SQLite only a column declared INTEGER PRIMARY KEY is the rowid itself (no second index).
SEQUENCE_TYPE = BigInteger().with_variant(Integer(), "sqlite")

# Its own Alembic version table, so the store can share a database with Dagster's PostgreSQL storage.
VERSION_TABLE = "hms_alembic_version"

# The append-only log. `sequence` is assigned under the store's write lock, so its order is the
# commit order and readers can page by it without missing late commits.
events = Table(
    "events",
    metadata,
    Column("sequence", SEQUENCE_TYPE, primary_key=True, autoincrement=False),
    Column("event_id", String(MAX_ID_LENGTH), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("user_id", String(MAX_ID_LENGTH), nullable=False),
    Column("memory_id", String(MAX_ID_LENGTH), nullable=False),
    Column("occurred_at", String(27), nullable=False),
    Column("recorded_at", String(27), nullable=False),
    Column("payload", Text, nullable=False),
    Column("erased", Boolean, nullable=False, default=False),
    Index("ix_events_memory", "user_id", "memory_id"),
    Index("ix_events_occurred_at", "occurred_at"),
)

# Which memories exist, per user, and whether they are live, archived or forgotten: kept in the same
# transaction as the events, so appends can reject events for memories that do not exist.
memory_keys = Table(
    "memory_keys",
    metadata,
    Column("user_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("memory_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("created_sequence", BigInteger, nullable=False),
    Index("ix_memory_keys_memory", "memory_id", "user_id"),
    sqlite_with_rowid=False,
)

# The `memories` asset: the replayed state of every memory, and the sequence it was replayed to.
memories = Table(
    "memories",
    metadata,
    Column("user_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("memory_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("content", Text),
    Column("session_id", String(MAX_NAME_LENGTH)),
    Column("memory_type", String(MAX_MEMORY_TYPE_LENGTH)),
    Column("category", String(MAX_NAME_LENGTH)),
    Column("tags", Text, nullable=False),
    Column("importance", Float),
    Column("confidence", Float),
    Column("source_type", String(MAX_NAME_LENGTH)),
    Column("source_id", String(MAX_NAME_LENGTH)),
    Column("created_by", String(MAX_NAME_LENGTH)),
    Column("parent_memory_id", String(MAX_ID_LENGTH)),
    Column("related_memory_ids", Text, nullable=False),
    Column("relations", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("created_at", String(27)),
    Column("last_modified_at", String(27)),
    Column("access_count", Integer, nullable=False),
    Column("last_accessed_at", String(27)),
    Column("relevant_count", Integer, nullable=False),
    Column("irrelevant_count", Integer, nullable=False),
    Column("relevance_score_sum", Float, nullable=False),
    Column("relevance_score_count", Integer, nullable=False),
    Column("is_archived", Boolean, nullable=False),
    Column("archive_reason", Text),
    Column("archived_at", String(27)),
    Column("is_forgotten", Boolean, nullable=False),
    Column("forgotten_at", String(27)),
    Column("event_count", Integer, nullable=False),
    Column("last_sequence", BigInteger),
)

projection_cursors = Table(
    "projection_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("sequence", BigInteger, nullable=False),
    Column("updated_at", String(27), nullable=False),
)

# The `concept_clusters` asset: per user, the current concepts.
concepts = Table(
    "concepts",
    metadata,
    Column("user_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("concept_id", String(64), primary_key=True),
    Column("label", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("summary_member_ids", Text, nullable=False),
    Column("member_ids", Text, nullable=False),
    Column("centroid", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("cohesion", Float, nullable=False),
    Column("first_seen", String(27)),
    Column("last_seen", String(27)),
    Column("member_tokens", Integer, nullable=False),
    Column("summary_tokens", Integer, nullable=False),
)

# The `graph_edges` asset: the typed, weighted edges of every user's memory graph.
graph_edges = Table(
    "graph_edges",
    metadata,
    Column("edge_type", String(32), primary_key=True),
    Column("source", String(520), primary_key=True),
    Column("target", String(520), primary_key=True),
    Column("qualifier", String(MAX_NAME_LENGTH), primary_key=True),
    Column("user_id", String(MAX_ID_LENGTH), nullable=False),
    Column("weight", Float, nullable=False),
    Column("properties", Text, nullable=False),
    Index("ix_graph_edges_user", "user_id"),
)

# The `memory_tiers` asset: per daily partition, the tier and score of every memory not forgotten.
memory_tiers = Table(
    "memory_tiers",
    metadata,
    Column("partition_date", String(10), primary_key=True),
    Column("user_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("memory_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("tier", String(8), nullable=False),
    Column("score", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_memory_tiers_user_day", "user_id", "partition_date"),
)

# The `tier_migrations` asset: per daily partition, every move between tiers.
tier_migrations = Table(
    "tier_migrations",
    metadata,
    Column("partition_date", String(10), primary_key=True),
    Column("user_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("memory_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("from_tier", String(8)),
    Column("to_tier", String(8)),
    Column("score", Float),
    Column("reason", Text, nullable=False),
    Column("at", String(27), nullable=False),
)

# API keys of the HTTP and MCP service: only a salted digest of each secret is stored.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("digest", String(128), nullable=False),
    Column("label", String(MAX_NAME_LENGTH)),
    Column("created_at", String(27), nullable=False),
    Column("revoked_at", String(27)),
    Column("capture", Boolean, nullable=False, default=True),
    Column("default_user", String(MAX_ID_LENGTH)),
    Index("ix_api_keys_tenant", "tenant"),
)
