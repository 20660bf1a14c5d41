"""What the context resource returns: a `Context` of `ContextItem`s, with its one JSON shape
(`to_json`, for HTTP, MCP and the plugins) and its prompt (`to_prompt`, rendered by `prompt.py`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hms_resources.context.index import SelectedAdapter
from hms_resources.context.prompt import render_prompt


@dataclass(frozen=True)
class ContextItem:
    memory_id: str
    text: str
    tokens: int
    score: float
    tier: str
    kind: str
    source_ids: list[str]
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """An item's one JSON shape, in a context and in search results alike."""
        return asdict(self)


@dataclass
class Context:
    user_id: str
    query: str
    token_budget: int
    items: list[ContextItem] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    adapter: SelectedAdapter | None = None
    """The user's champion LoRA adapter whose concept best matches the query, if any matches well enough."""
    work: dict[str, int] = field(default_factory=dict)
    """What the call did, counted (unmerged memories seen and ranked, their characters tokenized):
    bounded (`bounds.py`) whatever the user holds; for operators and tests, not part of the JSON."""

    @property
    def token_count(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def source_ids(self) -> list[str]:
        return [s for item in self.items for s in item.source_ids]

    def to_json(self, user_id: str | None = None) -> dict[str, Any]:
        """The one JSON shape of a context (HTTP, MCP, the plugins); `user_id` is the name the caller
        knows the user by (a tenant's own name), the stored id when omitted."""
        return {
            "user_id": self.user_id if user_id is None else user_id,
            "query": self.query,
            "token_budget": self.token_budget,
            "items": [item.to_json() for item in self.items],
            "prompt": self.to_prompt(),
            "token_count": self.token_count,
            "timings_ms": {name: round(ms, 3) for name, ms in self.timings_ms.items()},
            "adapter": asdict(self.adapter) if self.adapter is not None else None,
        }

    def to_prompt(self) -> str:
        """The items as the model reads them (`prompt.render_prompt`): within the budget, since each
        item's `tokens` includes its line break and any date line it opens."""
        return render_prompt(self.items)
