"""Questions from a user's facts: each fact's own candidates, questions that compare facts of one group
across sessions (first, latest, which came first, in a given part of a month) or facts said on the same
day, then a quota per category, with no two questions on the same evidence."""

from __future__ import annotations

from typing import Any

from hms_resources.datasets.conversations.checks import shares_content_word
from hms_resources.datasets.conversations.data import GROUP_QUESTIONS, SAME_DAY_QUESTION
from hms_resources.datasets.conversations.writing import Fact, Turn, User, window_phrase

QUESTION_CATEGORIES = ("single", "multi", "temporal", "paraphrase")


def _resolve(u: User, cand: dict[str, Any]) -> str | None:
    """The question text; for a paraphrase, the first wording (in random order) sharing no content word."""
    if cand["category"] != "paraphrase":
        return u.rng.choice(cand["questions"])
    texts = [t.text for t in cand["evidence"]]
    options = list(cand["questions"])
    u.rng.shuffle(options)
    for question in options:
        if not shares_content_word(question, texts):
            return question
    return None


def _group_candidates(u: User, keycount: dict[tuple, int]) -> list[dict[str, Any]]:
    rng = u.rng
    out: list[dict[str, Any]] = []

    def add(category: str, tag: str, questions, evidence: list[Turn]) -> None:
        out.append({"category": category, "tag": tag, "questions": [questions] if isinstance(questions, str) else questions,
                    "evidence": evidence, "keys": (), "fresh_only": False, "fact": None})

    groups: dict[str, list[Fact]] = {}
    for f in u.facts:
        if f.group:
            groups.setdefault(f.group, []).append(f)
    for group, facts in groups.items():
        spec = GROUP_QUESTIONS.get(group, {})
        labels: dict[str, int] = {}
        for f in facts:
            labels[f.label] = labels.get(f.label, 0) + 1
        clean = [f for f in facts if labels[f.label] == 1]
        if len(facts) >= 2 and len({f.session for f in facts}) == len(facts):
            newest, oldest = max(facts, key=lambda f: f.session), min(facts, key=lambda f: f.session)
            if "latest" in spec and labels[newest.label] == 1:
                add("temporal", group + "-latest", spec["latest"], newest.answer)
            if "first" in spec and labels[oldest.label] == 1:
                add("temporal", group + "-first", spec["first"], oldest.answer)
            if "agg" in spec and len(facts) <= 3 and len(clean) == len(facts):
                add("multi", group + "-agg", spec["agg"], [t for f in facts for t in f.answer])
        if "order" in spec and len(clean) >= 2:
            for _ in range(3):
                a, b = rng.sample(clean, 2)
                if a.session != b.session:
                    add("temporal", group + "-order", spec["order"].format(a=a.label, b=b.label), a.answer + b.answer)
        windows: dict[str, list[Fact]] = {}
        for f in facts:
            windows.setdefault(window_phrase(f.day), []).append(f)
        if "window" in spec and len(facts) >= 2:
            for window, inside in windows.items():
                if len(inside) == 1:
                    add("temporal", group + "-window", spec["window"].format(w=window), inside[0].answer)
                    if "para_window" in spec:
                        add("paraphrase", group + "-window", [q.format(w=window) for q in spec["para_window"]], inside[0].answer)
    by_session: dict[int, list[Fact]] = {}
    for f in u.facts:
        by_session.setdefault(f.session, []).append(f)
    for facts in by_session.values():
        anchors = [f for f in facts if f.t_anchor and not f.stale and f.keys and keycount[f.keys[0]] == 1]
        askable = [f for f in facts if f.t_ask and sum(1 for g in facts if g.group == f.group) == 1]
        for anchor in anchors:
            for answer in askable:
                if answer is not anchor:
                    add("temporal", "sameday-" + (answer.group or ""), SAME_DAY_QUESTION.format(ask=answer.t_ask, anchor=anchor.t_anchor),
                        anchor.answer + answer.answer)
    return out


def choose_questions(u: User) -> list[tuple[str, str, list[Turn]]]:
    """(category, question, evidence turns in time order) for one user, drawn from all candidates."""
    rng = u.rng
    keycount: dict[tuple, int] = {}
    for f in u.facts:
        for key in f.keys:
            keycount[key] = keycount.get(key, 0) + 1
    cands = [c for f in u.facts for c in f.cands
             if not (c["fresh_only"] and f.stale) and all(keycount.get(k, 0) == 1 for k in c["keys"])]
    cands += _group_candidates(u, keycount)
    by_category: dict[str, list[dict[str, Any]]] = {c: [] for c in QUESTION_CATEGORIES}
    for cand in cands:
        by_category[cand["category"]].append(cand)
    for pool in by_category.values():
        rng.shuffle(pool)
    if u.hard:
        total = rng.randint(14, 16)
        share = {"single": 0.2, "multi": 0.27, "temporal": 0.27, "paraphrase": 0.26}
    else:
        total = rng.randint(8, 12)
        share = {"single": 0.3, "multi": 0.25, "temporal": 0.25, "paraphrase": 0.2}
    quota = {c: int(round(total * s)) for c, s in share.items()}
    chosen: list[tuple[str, str, list[Turn]]] = []
    seen_text: set[str] = set()
    seen_evidence: set[tuple[str, ...]] = set()
    families: dict[str, int] = {}

    def take(category: str, wanted: int) -> int:
        got = 0
        pool = by_category[category]
        while got < wanted and pool:
            pool.sort(key=lambda c: families.get(c["tag"].split("-")[0], 0))
            cand = pool.pop(0)
            ev = tuple(sorted({t.id for t in cand["evidence"]}))
            if ev in seen_evidence:
                continue
            question = _resolve(u, cand)
            if question is None or question in seen_text:
                continue
            seen_text.add(question)
            seen_evidence.add(ev)
            family = cand["tag"].split("-")[0]
            families[family] = families.get(family, 0) + 1
            turns = sorted({t.id: t for t in cand["evidence"]}.values(), key=lambda t: t.at)
            chosen.append((category, question, turns))
            got += 1
        return got

    missing = 0
    for category in ("paraphrase", "temporal", "multi", "single"):
        missing += quota[category] - take(category, quota[category])
    for category in ("temporal", "multi", "paraphrase", "single"):
        if missing > 0:
            missing -= take(category, missing)
    return chosen
