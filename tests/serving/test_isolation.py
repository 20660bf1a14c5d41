"""Tenant isolation under random traffic, through the real HTTP app (in process, over ASGI) on a real
store: two tenants whose users are named alike, each with a write key and a read key, run thousands
of seeded random operations at once (one worker per tenant and user). Every memory carries its
tenant's marker word; no response to one tenant may hold the other's marker, memory or event ids,
or any key, and every answer must agree with a model of what the tenant itself wrote."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import new_key

TENANTS = ("acme", "globex")
MARKERS = {"acme": "acmemarkq", "globex": "globexmarkq"}
COMMON_USERS = ("alice", "bob", "carol")
OWN_USER = {"acme": "dave", "globex": "erin"}
"""A user only one tenant has: to the other it is an unknown user of its own."""
UNKNOWN = "zed"
TAGS = ("red", "green", "blue")
CATEGORIES = ("work", "home")
TYPES = ("fact", "preference")
CONSONANTS = "bcdfghjklmnpqrtvwxz"
OLD = "2025-01-01T00:00:00Z"
"""Memories added as raw events are dated before this; those added through /v1/memories, after."""
TOKEN = re.compile(r"[A-Za-z0-9_.:-]+")

OPS = {
    "add_single": 12,
    "add_batch": 6,
    "retry": 4,
    "get": 10,
    "list": 7,
    "search": 6,
    "context": 5,
    "history": 4,
    "update": 6,
    "archive": 3,
    "forget": 3,
    "feedback": 4,
    "raw_events": 4,
    "other_tenant": 4,
    "read_key_write": 3,
    "unknown_user": 3,
}


@dataclass
class Mem:
    memory_id: str
    content: str | None
    word: str
    status: str = "live"
    tags: list[str] = field(default_factory=list)
    category: str | None = None
    memory_type: str | None = None
    old: bool = False
    types: list[str] = field(default_factory=lambda: ["memory.created"])
    words: list[str] = field(default_factory=list)

    def forget(self) -> None:
        self.status = "forgotten"
        self.content = None
        self.tags = []
        self.category = None
        self.memory_type = None
        self.types.append("memory.forgotten")


@dataclass
class Tenant:
    name: str
    write: httpx.AsyncClient
    read: httpx.AsyncClient
    secrets: list[str]
    memories: dict[str, dict[str, Mem]] = field(default_factory=dict)
    memory_ids: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    other: Tenant | None = None
    all_secrets: list[str] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)
    """Every text this tenant sent with the other's marker in it: a memory's history shows the queries
    that returned it, as asked."""
    responses: int = 0

    @property
    def marker(self) -> str:
        return MARKERS[self.name]

    @property
    def users(self) -> list[str]:
        return [*COMMON_USERS, OWN_USER[self.name]]

    def check_clean(self, response: httpx.Response, request_tokens: set[str], echoed: list[str]) -> None:
        """Nothing of the other tenant, and no key at all, in what this tenant was answered (but for
        what this tenant itself said: a context echoes its query, a history the queries of its reads)."""
        other = self.other
        text = response.text
        for said in echoed:
            text = text.replace(said, "")
        where = f"{response.request.method} {response.request.url} -> {response.status_code}: {text[:600]}"
        assert other.marker not in text, f"the other tenant's marker leaked: {where}"
        assert f"{other.name}/" not in text, f"the other tenant's name leaked: {where}"
        for secret in self.all_secrets:
            assert secret not in text, f"an API key is in a response: {where}"
        leaked = (set(TOKEN.findall(text)) & (other.memory_ids | other.event_ids)) - self.memory_ids - self.event_ids - request_tokens
        assert not leaked, f"the other tenant's ids {sorted(leaked)[:5]} leaked: {where}"
        self.responses += 1

    async def call(self, method: str, path: str, *, read: bool = False, expect: int | None = None, **kwargs: Any) -> httpx.Response:
        client = self.read if read else self.write
        response = await client.request(method, path, **kwargs)
        said = json.dumps(kwargs, default=str)
        self.asked.update(v for v in strings(kwargs) if self.other.marker in v)
        echoed = sorted(self.asked, key=len, reverse=True)
        self.check_clean(response, set(TOKEN.findall(path + said)), echoed)
        if expect is not None:
            assert response.status_code == expect, (
                f"{method} {path} {kwargs}: expected {expect}, got {response.status_code} {response.text[:600]}"
            )
        return response


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)


def expect_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, f"expected {status} {code}, got {response.status_code}: {response.text[:400]}"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, response.text[:400]


class Worker:
    """Random operations on one user of one tenant; its model is that user's memories."""

    def __init__(self, tenant: Tenant, user: str, rng: random.Random, ops: int):
        self.tenant = tenant
        self.user = user
        self.rng = rng
        self.ops = ops
        self.mems: dict[str, Mem] = tenant.memories.setdefault(user, {})
        self.retryable: list[dict[str, Any]] = []
        self.shared = 0
        self.done: dict[str, int] = {}

    # helpers ---------------------------------------------------------------------------------

    def word(self) -> str:
        return "".join(self.rng.choices(CONSONANTS, k=10))

    def hexid(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(48):012x}"

    def ref(self) -> str:
        """The user as the API takes it: the own name, now and then with the own tenant in front."""
        return f"{self.tenant.name}/{self.user}" if self.rng.random() < 0.15 else self.user

    def content(self, word: str) -> str:
        return f"{self.tenant.marker} {word} {self.rng.choice(('remembered', 'noted', 'said'))} about {self.rng.choice(('tea', 'trains', 'maps'))}"

    def pick(self, *statuses: str) -> Mem | None:
        found = [m for m in self.mems.values() if not statuses or m.status in statuses]
        return self.rng.choice(found) if found else None

    def other_id(self) -> str | None:
        """A memory id only the other tenant has (under the same user name, where it has one)."""
        theirs = self.tenant.other.memories.get(self.user) or {}
        ids = [i for i in list(theirs) if i not in self.mems]
        return self.rng.choice(ids) if ids else None

    def target_id(self, *statuses: str) -> tuple[str, Mem | None]:
        """An id to act on: mostly an own memory, else the other tenant's or one nobody has."""
        roll = self.rng.random()
        if roll < 0.8:
            mem = self.pick(*statuses)
            if mem is not None:
                return mem.memory_id, mem
        if roll < 0.9:
            theirs = self.other_id()
            if theirs is not None:
                return theirs, None
        return self.hexid("nobody"), None

    def new_memory(self, with_user: bool = True) -> tuple[dict[str, Any], Mem]:
        word = self.word()
        mem = Mem("", self.content(word), word, words=[word])
        body: dict[str, Any] = {"content": mem.content}
        if with_user:
            body["user_id"] = self.ref()
        if self.rng.random() < 0.5:
            mem.tags = self.rng.sample(TAGS, self.rng.randint(1, 2))
            body["tags"] = mem.tags
        if self.rng.random() < 0.5:
            mem.category = body["category"] = self.rng.choice(CATEGORIES)
        if self.rng.random() < 0.5:
            mem.memory_type = body["memory_type"] = self.rng.choice(TYPES)
        roll = self.rng.random()
        if roll < 0.3:
            # the same memory and event ids as the other tenant's worker of the same user name uses
            body["memory_id"] = mem.memory_id = f"shared-{self.user}-{self.shared}"
            body["event_id"] = f"sev-{self.user}-{self.shared}"
            self.shared += 1
        elif roll < 0.6:
            body["memory_id"] = mem.memory_id = self.hexid("m")
            body["event_id"] = self.hexid("ev")
        if "event_id" in body:
            self.tenant.event_ids.add(body["event_id"])
        if mem.memory_id:
            self.tenant.memory_ids.add(mem.memory_id)
        return body, mem

    def record(self, mem: Mem, memory_id: str, event_id: str | None) -> None:
        assert memory_id not in self.mems, f"memory {memory_id} was created twice"
        mem.memory_id = memory_id
        self.mems[memory_id] = mem
        self.tenant.memory_ids.add(memory_id)
        if event_id:
            self.tenant.event_ids.add(event_id)

    def check_memory(self, found: dict[str, Any], mem: Mem) -> None:
        assert found["memory_id"] == mem.memory_id
        assert found["user_id"] == self.user, found
        assert found["status"] == mem.status, (found, mem)
        assert found["content"] == mem.content, (found, mem)
        assert found["tags"] == mem.tags, (found, mem)
        assert found["category"] == mem.category, (found, mem)
        assert found["memory_type"] == mem.memory_type, (found, mem)
        if mem.status == "forgotten":
            text = json.dumps(found)
            assert not any(w in text for w in mem.words), f"a forgotten memory still shows its words: {found}"

    # operations ------------------------------------------------------------------------------

    async def run(self) -> None:
        names = list(OPS)
        weights = [OPS[n] for n in names]
        for n in range(self.ops):
            op = self.rng.choices(names, weights)[0]
            try:
                await getattr(self, op)()
            except AssertionError as exc:
                raise AssertionError(f"{self.tenant.name}/{self.user}, operation {n} ({op}): {exc}") from exc
            self.done[op] = self.done.get(op, 0) + 1

    async def add_single(self) -> None:
        body, mem = self.new_memory()
        response = await self.tenant.call("POST", "/v1/memories", json=body, expect=201)
        result = response.json()
        assert result["status"] == "created" and result["user_id"] == self.user, result
        if "memory_id" in body:
            assert result["memory_id"] == body["memory_id"] and result["event_id"] == body["event_id"], result
        self.record(mem, result["memory_id"], result["event_id"])
        if "event_id" in body:
            self.retryable.append(body)

    async def add_batch(self) -> None:
        items: list[tuple[dict[str, Any], Mem | None, str]] = []
        idempotency = self.rng.random() < 0.3
        for _ in range(self.rng.randint(2, 6)):
            body, mem = self.new_memory()
            if idempotency:
                body.pop("event_id", None)
                body.pop("memory_id", None)
                mem.memory_id = ""
            items.append((body, mem, "created"))
        if self.rng.random() < 0.3:
            items.insert(self.rng.randrange(len(items) + 1), ({"user_id": self.user, "tags": ["red"]}, None, "invalid"))
        if self.rng.random() < 0.3:
            body, _ = self.new_memory()
            body["user_id"] = f"{self.tenant.other.name}/{self.user}"
            items.insert(self.rng.randrange(len(items) + 1), (body, None, "forbidden"))
        headers = {"Idempotency-Key": self.hexid("idem")} if idempotency else {}
        payload = {"memories": [b for b, _, _ in items]}
        response = await self.tenant.call("POST", "/v1/memories", json=payload, headers=headers, expect=200)
        found = response.json()
        assert len(found["results"]) == len(items)
        for i, ((body, mem, expected), result) in enumerate(zip(items, found["results"])):
            assert result["index"] == i
            if expected == "created":
                assert result["status"] == "created", result
                if idempotency:
                    assert result["event_id"] == f"{headers['Idempotency-Key']}:{i}" == result["memory_id"], result
                self.record(mem, result["memory_id"], result["event_id"])
            else:
                assert result["status"] == "rejected" and result["error"]["code"] == expected, result
        assert found["created"] == sum(e == "created" for _, _, e in items)
        if idempotency and self.rng.random() < 0.5:
            again = (await self.tenant.call("POST", "/v1/memories", json=payload, headers=headers, expect=200)).json()
            assert again["created"] == 0 and again["duplicates"] == found["created"], again
            for (_, mem, expected), result in zip(items, again["results"]):
                if expected == "created":
                    assert result["status"] == "duplicate" and result["memory_id"] == mem.memory_id, result

    async def retry(self) -> None:
        if not self.retryable:
            return await self.add_single()
        body = dict(self.rng.choice(self.retryable))
        mem = self.mems[body["memory_id"]]
        changed = self.rng.random() < 0.3
        if changed:
            body["content"] = self.content(self.word())
        response = await self.tenant.call("POST", "/v1/memories", json=body)
        if changed and mem.status != "forgotten":
            expect_error(response, 409, "conflict")
        else:
            # a forgotten memory's stored events lost their content, so any content reads as the same
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["status"] == "duplicate" and result["memory_id"] == mem.memory_id and result["user_id"] == self.user, result
        if self.rng.random() < 0.5:
            found = await self.tenant.call("GET", f"/v1/memories/{mem.memory_id}", params={"user_id": self.user}, read=True, expect=200)
            self.check_memory(found.json(), mem)

    async def get(self) -> None:
        memory_id, mem = self.target_id()
        response = await self.tenant.call("GET", f"/v1/memories/{memory_id}", params={"user_id": self.ref()}, read=self.rng.random() < 0.5)
        if mem is None:
            expect_error(response, 404, "not_found")
        else:
            assert response.status_code == 200, response.text
            self.check_memory(response.json(), mem)

    async def list(self) -> None:
        params: dict[str, Any] = {"user_id": self.ref()}
        status = self.rng.choice((None, "live", "archived", "forgotten", "any"))
        if status:
            params["status"] = status
        want = lambda m: status == "any" or m.status == (status or "live")  # noqa: E731
        if self.rng.random() < 0.3:
            tag = params["tag"] = self.rng.choice(TAGS)
            want = (lambda w, t: lambda m: w(m) and t in m.tags)(want, tag)
        if self.rng.random() < 0.2:
            category = params["category"] = self.rng.choice(CATEGORIES)
            want = (lambda w, c: lambda m: w(m) and m.category == c)(want, category)
        if self.rng.random() < 0.2:
            memory_type = params["memory_type"] = self.rng.choice(TYPES)
            want = (lambda w, t: lambda m: w(m) and m.memory_type == t)(want, memory_type)
        if self.rng.random() < 0.15:
            params["created_before"] = OLD
            want = (lambda w: lambda m: w(m) and m.old)(want)
        elif self.rng.random() < 0.1:
            params["created_after"] = OLD
            want = (lambda w: lambda m: w(m) and not m.old)(want)
        expected = sorted(m.memory_id for m in self.mems.values() if want(m))
        limit = self.rng.choice((1, 2, 3, 5, 8, 50, 500))
        limit = max(limit, -(-len(expected) // 25))
        params["limit"] = limit
        seen: list[str] = []
        read = self.rng.random() < 0.5
        for _ in range(len(expected) // limit + 2):
            page = (await self.tenant.call("GET", "/v1/memories", params=params, read=read, expect=200)).json()
            assert len(page["memories"]) <= limit
            for found in page["memories"]:
                assert found["memory_id"] in self.mems, f"listed a memory this user never had: {found}"
                self.check_memory(found, self.mems[found["memory_id"]])
            seen += [m["memory_id"] for m in page["memories"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        else:
            raise AssertionError(f"paging did not end: {params}")
        assert seen == expected, f"list {params}: {len(seen)} memories, the model has {len(expected)}"

    def query(self) -> tuple[str, Mem | None, bool]:
        """A query naming one own memory's word, or the other tenant's marker and one of its words."""
        if self.rng.random() < 0.25:
            theirs = [m for m in list((self.tenant.other.memories.get(self.user) or {}).values()) if m.word]
            word = self.rng.choice(theirs).word if theirs else self.word()
            return f"{self.tenant.other.marker} {word}", None, True
        mem = self.pick()
        if mem is None:
            return f"{self.tenant.marker} {self.word()}", None, False
        return (f"{self.tenant.marker} {mem.word}" if self.rng.random() < 0.7 else mem.word), mem, False

    def live_ids(self) -> set[str]:
        return {m.memory_id for m in self.mems.values() if m.status == "live"}

    async def search(self) -> None:
        query, target, foreign = self.query()
        body = {"user_id": self.ref(), "query": query, "limit": self.rng.choice((5, 10, 20))}
        results = (await self.tenant.call("POST", "/v1/search", json=body, read=self.rng.random() < 0.5, expect=200)).json()["results"]
        ids = [r["memory_id"] for r in results]
        assert len(ids) <= body["limit"]
        assert set(ids) <= self.live_ids(), f"search found memories that are not this user's live ones: {set(ids) - self.live_ids()}"
        for result in results:
            assert result["text"] == self.mems[result["memory_id"]].content, result
        if foreign:
            words = set(query.split())
            assert not any(words & set(r["text"].split()) for r in results), f"a query of the other tenant's words found them: {ids}"
        elif target is not None:
            if target.status == "live":
                assert ids and ids[0] == target.memory_id, f"search for {query!r} did not put {target.memory_id} first: {ids}"
            else:
                assert target.memory_id not in ids, f"search found the {target.status} memory {target.memory_id}"

    async def context(self) -> None:
        query, target, foreign = self.query()
        body = {"user_id": self.ref(), "query": query, "max_tokens": self.rng.choice((256, 1024))}
        found = (await self.tenant.call("POST", "/v1/context", json=body, read=self.rng.random() < 0.5, expect=200)).json()
        assert found["user_id"] == self.user, found["user_id"]
        ids = [i["memory_id"] for i in found["items"]]
        assert set(ids) <= self.live_ids(), f"context holds memories that are not this user's live ones: {set(ids) - self.live_ids()}"
        for item in found["items"]:
            assert set(item["source_ids"]) <= self.live_ids(), item
        assert found["token_count"] <= body["max_tokens"]
        if foreign:
            words = set(query.split())
            assert not any(words & set(i["text"].split()) for i in found["items"]), f"a query of the other tenant's words found them: {ids}"
        elif target is not None:
            assert (target.memory_id in ids) == (target.status == "live"), f"{target.status} {target.memory_id} for {query!r}: {ids}"

    async def history(self) -> None:
        memory_id, mem = self.target_id()
        response = await self.tenant.call(
            "GET", f"/v1/memories/{memory_id}/history", params={"user_id": self.ref()}, read=self.rng.random() < 0.5
        )
        if mem is None:
            return expect_error(response, 404, "not_found")
        assert response.status_code == 200, response.text
        events = response.json()["events"]
        types = [e["type"] for e in events if e["type"] != "memory.accessed"]
        assert types == mem.types, f"history of {memory_id}: {types}, the model has {mem.types}"
        assert [e["n"] for e in events] == list(range(1, len(events) + 1)), "a history numbers the memory's own events, not the store's"
        for event in events:
            assert "/" not in event["event_id"], f"an event id in stored form: {event}"
        if mem.status == "forgotten":
            assert all("content" not in e["payload"] for e in events), events
            assert not any(w in response.text for w in mem.words), "a forgotten memory's history still holds its words"

    async def update(self) -> None:
        memory_id, mem = self.target_id()
        changes: dict[str, Any] = {}
        word = self.word()
        if self.rng.random() < 0.6:
            changes["content"] = self.content(word)
        if not changes or self.rng.random() < 0.3:
            changes["tags"] = self.rng.sample(TAGS, self.rng.randint(0, 3))
        response = await self.tenant.call("PATCH", f"/v1/memories/{memory_id}", params={"user_id": self.ref()}, json=changes)
        if mem is None:
            return expect_error(response, 404, "not_found")
        if mem.status == "forgotten":
            return expect_error(response, 410, "forgotten")
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["memory_id"] == memory_id and result["type"] == "memory.updated", result
        self.tenant.event_ids.add(result["event_id"])
        mem.types.append("memory.updated")
        if "content" in changes:
            mem.content, mem.word = changes["content"], word
            mem.words.append(word)
        if "tags" in changes:
            mem.tags = changes["tags"]

    async def archive(self) -> None:
        memory_id, mem = self.target_id()
        kwargs = {"json": {"reason": "stale"}} if self.rng.random() < 0.5 else {}
        response = await self.tenant.call("POST", f"/v1/memories/{memory_id}/archive", params={"user_id": self.ref()}, **kwargs)
        if mem is None:
            return expect_error(response, 404, "not_found")
        if mem.status == "forgotten":
            return expect_error(response, 410, "forgotten")
        assert response.status_code == 200, response.text
        self.tenant.event_ids.add(response.json()["event_id"])
        mem.status = "archived"
        mem.types.append("memory.archived")

    async def forget(self) -> None:
        memory_id, mem = self.target_id()
        response = await self.tenant.call("DELETE", f"/v1/memories/{memory_id}", params={"user_id": self.ref()})
        if mem is None:
            return expect_error(response, 404, "not_found")
        if mem.status == "forgotten":
            return expect_error(response, 410, "forgotten")
        assert response.status_code == 200, response.text
        assert response.json()["type"] == "memory.forgotten"
        self.tenant.event_ids.add(response.json()["event_id"])
        mem.forget()

    async def feedback(self) -> None:
        memory_id, mem = self.target_id()
        body: dict[str, Any] = {"user_id": self.ref(), "memory_id": memory_id, "was_relevant": self.rng.random() < 0.5}
        if self.rng.random() < 0.5:
            body["relevance_score"] = round(self.rng.random(), 3)
        response = await self.tenant.call("POST", "/v1/feedback", json=body)
        if mem is None or mem.status == "forgotten":
            return expect_error(response, 404, "not_found")
        assert response.status_code == 200, response.text
        assert response.json() == {"memory_id": memory_id, "recorded": True}

    async def raw_events(self) -> None:
        events: list[tuple[dict[str, Any], str, Any]] = []
        for _ in range(self.rng.randint(1, 4)):
            roll = self.rng.random()
            event_id = self.hexid("raw")
            self.tenant.event_ids.add(event_id)
            stamp = f"2024-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}T10:00:00Z"
            record: dict[str, Any] = {"event_id": event_id, "user_id": self.ref(), "occurred_at": stamp}
            target = self.pick("live", "archived")
            if roll < 0.5 or target is None:
                word = self.word()
                mem = Mem("", self.content(word), word, old=True, words=[word])
                mem.memory_id = self.hexid("r")
                self.tenant.memory_ids.add(mem.memory_id)
                record.update(type="memory.created", memory_id=mem.memory_id, payload={"content": mem.content})
                if self.rng.random() < 0.5:
                    mem.tags = record["payload"]["tags"] = [self.rng.choice(TAGS)]
                events.append((record, "created", mem))
            elif roll < 0.7:
                word = self.word()
                record.update(type="memory.updated", memory_id=target.memory_id, payload={"content": self.content(word)})
                events.append((record, "created", ("update", target, word)))
            elif roll < 0.85:
                tag = self.rng.choice(TAGS)
                record.update(type="memory.tagged", memory_id=target.memory_id, payload={"tags": [tag]})
                events.append((record, "created", ("tag", target, tag)))
            elif roll < 0.93:
                record.update(
                    type="memory.created",
                    memory_id=self.hexid("r"),
                    user_id=f"{self.tenant.other.name}/{self.user}",
                    payload={"content": self.content(self.word())},
                )
                events.append((record, "forbidden", None))
            else:
                record.update(type="memory.created", memory_id=self.hexid("r"), payload={"tags": ["red"]})
                events.append((record, "invalid", None))
        # an event on the same memory as an earlier one of the batch would make the model's order matter
        touched: set[str] = set()
        kept = []
        for record, expected, change in events:
            if record["memory_id"] in touched:
                continue
            touched.add(record["memory_id"])
            kept.append((record, expected, change))
        response = await self.tenant.call("POST", "/v1/events", json={"events": [r for r, _, _ in kept]}, expect=200)
        results = response.json()["results"]
        for (record, expected, change), result in zip(kept, results):
            if expected != "created":
                assert result["status"] == "rejected" and result["error"]["code"] == expected, result
                continue
            assert result["status"] == "created" and result["event_id"] == record["event_id"], result
            if isinstance(change, Mem):
                self.record(change, record["memory_id"], record["event_id"])
            elif change[0] == "update":
                mem, word = change[1], change[2]
                mem.content, mem.word = record["payload"]["content"], word
                mem.words.append(word)
                mem.types.append("memory.updated")
            else:
                mem, tag = change[1], change[2]
                if tag not in mem.tags:
                    mem.tags = [*mem.tags, tag]
                mem.types.append("memory.tagged")

    async def other_tenant(self) -> None:
        """Naming the other tenant's user is refused, whatever the call, and changes nothing."""
        stranger = f"{self.tenant.other.name}/{self.user}"
        memory_id = self.other_id() or self.hexid("m")
        route = self.rng.choice(
            ("get", "list", "search", "context", "history", "update", "archive", "forget", "feedback", "add", "batch", "events")
        )
        call = self.tenant.call
        read = self.rng.random() < 0.5
        if route == "get":
            response = await call("GET", f"/v1/memories/{memory_id}", params={"user_id": stranger}, read=read)
        elif route == "list":
            response = await call("GET", "/v1/memories", params={"user_id": stranger, "status": "any"}, read=read)
        elif route == "search":
            response = await call("POST", "/v1/search", json={"user_id": stranger, "query": self.tenant.other.marker}, read=read)
        elif route == "context":
            response = await call("POST", "/v1/context", json={"user_id": stranger, "query": self.tenant.other.marker}, read=read)
        elif route == "history":
            response = await call("GET", f"/v1/memories/{memory_id}/history", params={"user_id": stranger}, read=read)
        elif route == "update":
            response = await call(
                "PATCH", f"/v1/memories/{memory_id}", params={"user_id": stranger}, json={"content": self.content(self.word())}
            )
        elif route == "archive":
            response = await call("POST", f"/v1/memories/{memory_id}/archive", params={"user_id": stranger})
        elif route == "forget":
            response = await call("DELETE", f"/v1/memories/{memory_id}", params={"user_id": stranger})
        elif route == "feedback":
            response = await call("POST", "/v1/feedback", json={"user_id": stranger, "memory_id": memory_id, "was_relevant": False})
        elif route == "add":
            response = await call("POST", "/v1/memories", json={"user_id": stranger, "content": self.content(self.word())})
        else:
            record = {"user_id": stranger, "content": self.content(self.word())}
            if route == "batch":
                response = await call("POST", "/v1/memories", json={"memories": [record]}, expect=200)
            else:
                record = {
                    "event_id": self.hexid("raw"),
                    "type": "memory.created",
                    "memory_id": self.hexid("r"),
                    "occurred_at": OLD,
                    "user_id": stranger,
                    "payload": {"content": record["content"]},
                }
                response = await call("POST", "/v1/events", json={"events": [record]}, expect=200)
            (result,) = response.json()["results"]
            assert result["status"] == "rejected" and result["error"]["code"] == "forbidden", result
            return
        expect_error(response, 403, "forbidden")

    async def read_key_write(self) -> None:
        """A read key cannot change anything."""
        mem = self.pick()
        memory_id = mem.memory_id if mem else self.hexid("m")
        route = self.rng.choice(("add", "batch", "update", "archive", "forget", "feedback", "events"))
        call = lambda *a, **k: self.tenant.call(*a, read=True, **k)  # noqa: E731
        if route == "add":
            response = await call("POST", "/v1/memories", json={"user_id": self.ref(), "content": self.content(self.word())})
        elif route == "batch":
            response = await call(
                "POST", "/v1/memories", json={"memories": [{"user_id": self.ref(), "content": self.content(self.word())}]}
            )
        elif route == "update":
            response = await call(
                "PATCH", f"/v1/memories/{memory_id}", params={"user_id": self.ref()}, json={"content": self.content(self.word())}
            )
        elif route == "archive":
            response = await call("POST", f"/v1/memories/{memory_id}/archive", params={"user_id": self.ref()})
        elif route == "forget":
            response = await call("DELETE", f"/v1/memories/{memory_id}", params={"user_id": self.ref()})
        elif route == "feedback":
            response = await call("POST", "/v1/feedback", json={"user_id": self.ref(), "memory_id": memory_id, "was_relevant": True})
        else:
            record = {
                "event_id": self.hexid("raw"),
                "type": "memory.created",
                "memory_id": self.hexid("r"),
                "occurred_at": OLD,
                "user_id": self.ref(),
                "payload": {"content": "x"},
            }
            response = await call("POST", "/v1/events", json={"events": [record]})
        expect_error(response, 403, "forbidden")
        if mem is not None:
            found = await self.tenant.call("GET", f"/v1/memories/{memory_id}", params={"user_id": self.user}, read=True, expect=200)
            self.check_memory(found.json(), mem)

    async def unknown_user(self) -> None:
        """A user of one's own tenant that never wrote anything (though the other tenant may have one of that name)."""
        user = self.rng.choice((UNKNOWN, OWN_USER[self.tenant.other.name]))
        read = self.rng.random() < 0.5
        call = self.tenant.call
        listed = (await call("GET", "/v1/memories", params={"user_id": user, "status": "any"}, read=read, expect=200)).json()
        assert listed == {"memories": [], "next_cursor": None}, listed
        query = f"{self.tenant.other.marker} {self.tenant.marker}"
        found = (await call("POST", "/v1/search", json={"user_id": user, "query": query}, read=read, expect=200)).json()
        assert found == {"results": []}, found
        context = (await call("POST", "/v1/context", json={"user_id": user, "query": query}, read=read, expect=200)).json()
        assert context["items"] == [] and context["user_id"] == user, context
        memory_id = self.other_id() or self.hexid("m")
        expect_error(await call("GET", f"/v1/memories/{memory_id}", params={"user_id": user}, read=read), 404, "not_found")
        expect_error(await call("GET", f"/v1/memories/{memory_id}/history", params={"user_id": user}, read=read), 404, "not_found")
        expect_error(
            await call("POST", "/v1/feedback", json={"user_id": user, "memory_id": memory_id, "was_relevant": True}), 404, "not_found"
        )
        expect_error(await call("PATCH", f"/v1/memories/{memory_id}", params={"user_id": user}, json={"content": "x"}), 404, "not_found")


# The service and its tenants ------------------------------------------------------------------------


@contextmanager
def served_tenants(monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Iterator[tuple[Any, Any, dict[str, dict[str, str]]]]:
    """The HTTP app over the store the environment names (SQLite under the HMS home, or `database_url`),
    and a write key and a read key per tenant."""
    if database_url:
        monkeypatch.setenv("HMS_DATABASE_URL", database_url)
    # Isolation, not latency, is under test (test_fairness and test_faults hold the deadline): a CI
    # machine whose other worker trains a model can make a tenant's queued context calls wait past 30 s.
    monkeypatch.setenv("HMS_RETRIEVAL_DEADLINE_SECONDS", "300")
    from hms_jobs.cli.serve import build_service
    from hms_resources.serving.http import create_app

    service = build_service()
    keys = {t: {scope: new_key(service.store, t, scope) for scope in ("write", "read")} for t in TENANTS}
    app = create_app(service)
    # The test client runs no lifespan: load the models before the traffic, so that a loaded CI machine's
    # first, untimed call is not followed by others timed while they wait for the same load.
    service.assembler.embedder.encode(["warm"])
    service.assembler.embedder.encode_query("warm")
    try:
        yield service, app, keys
    finally:
        service.close()
        service.store.close()


def client(app: Any, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


async def run_traffic(app: Any, keys: dict[str, dict[str, str]], seed: int, ops: int) -> dict[str, Tenant]:
    every_secret = [k for scopes in keys.values() for k in scopes.values()]
    tenants: dict[str, Tenant] = {}
    for name in TENANTS:
        tenants[name] = Tenant(
            name, client(app, keys[name]["write"]), client(app, keys[name]["read"]), list(keys[name].values()), all_secrets=every_secret
        )
    tenants["acme"].other, tenants["globex"].other = tenants["globex"], tenants["acme"]
    try:
        workers = [
            Worker(tenant, user, random.Random(f"{seed}:{tenant.name}:{user}"), ops) for tenant in tenants.values() for user in tenant.users
        ]
        await asyncio.gather(*(w.run() for w in workers))
        for tenant in tenants.values():
            await final_check(tenant)
        done: dict[str, int] = {}
        for worker in workers:
            for op, n in worker.done.items():
                done[op] = done.get(op, 0) + n
        print(
            f"seed {seed}: {sum(done.values())} operations {dict(sorted(done.items()))}; {sum(t.responses for t in tenants.values())} responses checked"
        )
    finally:
        for tenant in tenants.values():
            await tenant.write.aclose()
            await tenant.read.aclose()
    return tenants


async def final_check(tenant: Tenant) -> None:
    """Every user's memories, listed whole, are exactly the model's, each as the model has it."""
    worker = Worker(tenant, "", random.Random(0), 0)
    for user in [*tenant.users, UNKNOWN, OWN_USER[tenant.other.name]]:
        worker.user, worker.mems = user, tenant.memories.get(user, {})
        seen: list[str] = []
        params: dict[str, Any] = {"user_id": user, "status": "any", "limit": 500}
        while True:
            page = (await tenant.call("GET", "/v1/memories", params=params, read=True, expect=200)).json()
            for found in page["memories"]:
                assert found["memory_id"] in worker.mems, found
                worker.check_memory(found, worker.mems[found["memory_id"]])
            seen += [m["memory_id"] for m in page["memories"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == sorted(worker.mems), f"{tenant.name}/{user}: {len(seen)} memories listed, {len(worker.mems)} written"


def check_store(service: Any, tenants: dict[str, Tenant]) -> None:
    """In the store itself: every event belongs to one tenant's user, and no tenant's events hold the
    other's marker (but in the query a caller sent, which an access records as asked)."""
    users = {t: 0 for t in TENANTS}
    for event in service.store.read_events():
        tenant, _, user = event.user_id.partition("/")
        assert tenant in TENANTS and user, f"an event of a user outside the tenants: {event}"
        users[tenant] += 1
        other = tenants[tenant].other
        stored = {k: v for k, v in event.payload.items() if not (event.type == "memory.accessed" and k == "query")}
        assert other.marker not in json.dumps(stored), f"{tenant}'s event holds {other.name}'s marker: {event}"
        if not event.event_id.startswith(("feedback-", "access-")):
            assert event.event_id.startswith(f"{tenant}/"), f"{tenant}'s event under another's event id: {event}"
    for name, tenant in tenants.items():
        assert users[name] >= sum(len(m) for m in tenant.memories.values())
        for user, mems in tenant.memories.items():
            stored = {m.memory_id for m in service.store.current_memories(f"{name}/{user}")}
            assert stored == set(mems), f"{name}/{user}: the store and the model differ by {sorted(stored ^ set(mems))[:5]}"


def check_logs(caplog: pytest.LogCaptureFixture, keys: dict[str, dict[str, str]]) -> None:
    text = caplog.text
    for scopes in keys.values():
        for key in scopes.values():
            assert key not in text and key.split("_", 2)[2] not in text


# Tests ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_isolation_under_random_traffic_sqlite(hms_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with served_tenants(monkeypatch, None) as (service, app, keys):
        tenants = asyncio.run(run_traffic(app, keys, seed=20240607, ops=int(os.environ.get("HMS_TEST_ISOLATION_OPS", "400"))))
        check_store(service, tenants)
    check_logs(caplog, keys)


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_isolation_under_random_traffic_postgres(
    hms_home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with served_tenants(monkeypatch, postgres_url) as (service, app, keys):
        tenants = asyncio.run(run_traffic(app, keys, seed=77, ops=60))
        check_store(service, tenants)
    check_logs(caplog, keys)


def test_same_names_in_two_tenants_are_two_memories(hms_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both tenants add `alice`'s memory `m-1` with the event id `e-1`: two memories, each tenant sees its own."""

    async def scenario(app: Any, keys: dict[str, dict[str, str]]) -> None:
        clients = {t: client(app, keys[t]["write"]) for t in TENANTS}
        try:
            for tenant in TENANTS:
                body = {"user_id": "alice", "memory_id": "m-1", "event_id": "e-1", "content": f"{MARKERS[tenant]} tea"}
                response = await clients[tenant].post("/v1/memories", json=body)
                assert response.status_code == 201 and response.json()["status"] == "created", response.text
            for tenant, other in (("acme", "globex"), ("globex", "acme")):
                found = (await clients[tenant].get("/v1/memories/m-1", params={"user_id": "alice"})).json()
                assert found["content"] == f"{MARKERS[tenant]} tea" and found["user_id"] == "alice"
                history = (await clients[tenant].get("/v1/memories/m-1/history", params={"user_id": "alice"})).json()
                assert [e["event_id"] for e in history["events"]] == ["e-1"]
                results = (await clients[tenant].post("/v1/search", json={"user_id": "alice", "query": "tea"})).json()["results"]
                assert [r["text"] for r in results] == [f"{MARKERS[tenant]} tea"]
                context = (await clients[tenant].post("/v1/context", json={"user_id": "alice", "query": "tea"})).json()
                assert MARKERS[other] not in context["prompt"] and MARKERS[tenant] in context["prompt"]
            gone = await clients["acme"].delete("/v1/memories/m-1", params={"user_id": "alice"})
            assert gone.status_code == 200
            kept = (await clients["globex"].get("/v1/memories/m-1", params={"user_id": "alice"})).json()
            assert kept["status"] == "live" and kept["content"] == f"{MARKERS['globex']} tea"
            results = (await clients["globex"].post("/v1/search", json={"user_id": "alice", "query": "tea"})).json()["results"]
            assert [r["memory_id"] for r in results] == ["m-1"]
        finally:
            for c in clients.values():
                await c.aclose()

    with served_tenants(monkeypatch, None) as (_, app, keys):
        asyncio.run(scenario(app, keys))


def test_another_tenants_user_is_forbidden_everywhere(hms_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`user_id: "globex/alice"` from an acme key is 403 `forbidden` on every route (an item of a batch:
    rejected as `forbidden`), and stores nothing."""

    async def scenario(app: Any, keys: dict[str, dict[str, str]]) -> None:
        globex = client(app, keys["globex"]["write"])
        acme = client(app, keys["acme"]["write"])
        try:
            created = await globex.post("/v1/memories", json={"user_id": "alice", "memory_id": "g-1", "content": "globexmarkq tea"})
            assert created.status_code == 201
            stranger = "globex/alice"
            calls = {
                "add": ("POST", "/v1/memories", {"json": {"user_id": stranger, "content": "acmemarkq tea"}}),
                "get": ("GET", "/v1/memories/g-1", {"params": {"user_id": stranger}}),
                "list": ("GET", "/v1/memories", {"params": {"user_id": stranger}}),
                "history": ("GET", "/v1/memories/g-1/history", {"params": {"user_id": stranger}}),
                "update": ("PATCH", "/v1/memories/g-1", {"params": {"user_id": stranger}, "json": {"content": "acmemarkq"}}),
                "archive": ("POST", "/v1/memories/g-1/archive", {"params": {"user_id": stranger}}),
                "forget": ("DELETE", "/v1/memories/g-1", {"params": {"user_id": stranger}}),
                "search": ("POST", "/v1/search", {"json": {"user_id": stranger, "query": "tea"}}),
                "context": ("POST", "/v1/context", {"json": {"user_id": stranger, "query": "tea"}}),
                "feedback": ("POST", "/v1/feedback", {"json": {"user_id": stranger, "memory_id": "g-1", "was_relevant": False}}),
            }
            wrong = {}
            for name, (method, path, kwargs) in calls.items():
                response = await acme.request(method, path, **kwargs)
                assert "globexmarkq" not in response.text
                if response.status_code != 403 or response.json()["error"]["code"] != "forbidden":
                    wrong[name] = (response.status_code, response.text)
            batch = await acme.post("/v1/memories", json={"memories": [{"user_id": stranger, "content": "acmemarkq tea"}]})
            assert batch.json()["results"][0]["error"]["code"] == "forbidden"
            event = {
                "event_id": "x-1",
                "type": "memory.created",
                "user_id": stranger,
                "memory_id": "a-1",
                "occurred_at": OLD,
                "payload": {"content": "acmemarkq"},
            }
            events = await acme.post("/v1/events", json={"events": [event]})
            assert events.json()["results"][0]["error"]["code"] == "forbidden"
            kept = (await globex.get("/v1/memories/g-1", params={"user_id": "alice"})).json()
            assert kept["status"] == "live" and kept["content"] == "globexmarkq tea" and kept["access_count"] == 0
            listed = (await globex.get("/v1/memories", params={"user_id": "alice", "status": "any"})).json()
            assert [m["memory_id"] for m in listed["memories"]] == ["g-1"]
            assert not wrong, f"not 403 forbidden: {wrong}"
        finally:
            await acme.aclose()
            await globex.aclose()

    with served_tenants(monkeypatch, None) as (_, app, keys):
        asyncio.run(scenario(app, keys))
