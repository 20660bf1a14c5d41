"""One-off episodes: a trip, a talk, a visit, a meal, a restaurant, a book, a film, a present, a weekend,
a room to paint. Each writes one topic into a session (fact turns woven into filler) and says which
questions its facts can answer; it returns False, having written nothing, when it does not apply.
And the profile facts, each said once, in passing, at the start of some session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hms_resources.datasets.conversations.data import (
    BOOKS,
    DESTINATIONS,
    DISHES,
    FILM_OPINIONS,
    FILMS,
    LODGINGS,
    OCCASIONS,
    PARTNER_PARAS,
    READ_OPINIONS,
    RESTAURANTS,
    ROOMS,
    STREETS,
    WEEKEND_ACTS,
    anchor,
    wordings,
)
from hms_resources.datasets.conversations.writing import (
    MONTHS,
    WEEKDAYS,
    Fact,
    Session,
    Turn,
    User,
    date_phrase,
    ordinal,
    pronouns,
    refer_to,
    span_phrase,
    with_article,
)


def episode_trip(c: Session, budget: int) -> bool:
    u, rng = c.user, c.rng
    dest, wish = u.take("dest", DESTINATIONS)
    comp = refer_to(u.person("trip"))
    start = c.day + timedelta(days=rng.randint(12, 50))
    dates = span_phrase(start, start + timedelta(days=rng.randint(3, 9)))
    lodging = u.take("lodging", LODGINGS)
    qa = rng.random() < 0.4
    state: dict[str, Any] = {}

    def plan() -> None:
        if not qa:
            t = c.say("user", c.pick("trip:plan", comp=comp["text"], dest=dest, dates=dates))
            c.say("assistant", c.ack("travel"))
            state["plan"], state["dest_turn"] = [t], t
        else:
            t1 = c.say("user", c.pick("trip:qa1", comp=comp["text"], dates=dates))
            c.say("assistant", c.pick("trip:qa2"))
            t2 = c.say("user", c.pick("trip:qa3", dest=dest, name=comp["name"]))
            c.say("assistant", c.ack("travel"))
            state["plan"], state["dest_turn"] = [t1, t2], t2

    def stay() -> None:
        state["stay"] = c.say("user", c.pick("trip:stay", dest=dest, lodging=lodging))
        c.say("assistant", c.reply("trip:stay-ack"))

    def want() -> None:
        state["wish"] = c.say("user", c.pick("trip:wish", dest=dest, wish=wish))
        c.say("assistant", c.reply("trip:wish-ack"))

    def decoy() -> None:
        other, _ = u.take("dest", DESTINATIONS)
        colleague, _ = u.name()
        c.ex(c.pick("trip:decoy", who=colleague, other=other), c.aside("trip:decoy-ack"))

    blocks = [(1 if not qa else 2, plan), (1, stay)]
    if rng.random() < 0.6:
        blocks.append((1, want, True))
    if c.decoy(0.15):
        blocks.insert(rng.randrange(len(blocks) + 1), (1, decoy, True))
    c.weave("travel", blocks, budget)

    keys = [("trip", dest), ("trip_with", comp["key"]), ("trip_with_para", comp["para_key"])]
    f = c.fact("trip", keys, state["plan"] + [state["stay"]] + ([state["wish"]] if "wish" in state else []))
    f.grouped("trip", f"the {dest} trip", [state["dest_turn"]])
    f.t_anchor = anchor("trip", dest=dest)
    f.ask("single", "trip-stay", wordings("trip-stay", dest=dest), [state["stay"]], [("trip", dest)])
    if "wish" in state:
        f.ask("single", "trip-wish", wordings("trip-wish", dest=dest), [state["wish"]], [("trip", dest)])
    if not qa:
        f.ask("single", "trip-who", wordings("trip-who", dest=dest), state["plan"], [("trip", dest)])
        f.ask("single", "trip-when", wordings("trip-when", dest=dest), state["plan"], [("trip", dest)])
        f.ask("multi", "trip-whowhere", wordings("trip-whowhere", dest=dest), state["plan"] + [state["stay"]], [("trip", dest)])
        f.ask("paraphrase", "trip-para", wordings("trip-para", comp["paras"]), state["plan"] + [state["stay"]],
              [("trip_with_para", comp["para_key"])])
    else:
        f.ask("multi", "trip-qa", wordings("trip-qa", who=comp["q"]), state["plan"], [("trip_with", comp["key"])])
    return True


def episode_conference(c: Session, budget: int) -> bool:
    u, rng = c.user, c.rng
    job = u.p["job"]
    if len(u.used.get("conf", [])) >= 2:
        return False
    conf = u.take("conf", job["confs"], unique=True)
    if conf is None:
        return False
    city, _ = u.take("dest", DESTINATIONS)
    talk = u.take("talk", job["talks"])
    when = c.day + timedelta(days=rng.randint(20, 60))
    monday = when - timedelta(days=when.weekday())
    state: dict[str, Turn] = {}

    def news() -> None:
        state["u1"] = c.say("user", c.pick("conf:1", talk=talk, conf=conf))
        state["a"] = c.say("assistant", c.pick("conf:2", conf=conf))
        state["u2"] = c.say("user", c.pick("conf:3", city=city, monday=date_phrase(monday), when=date_phrase(when)))
        c.say("assistant", c.ack("talk"))

    c.weave("talk", [(2, news)], budget, {"conf": conf})
    f = c.fact("conference", [("conf", conf), ("conf_any",)], [state["u1"], state["a"], state["u2"]])
    f.t_anchor = anchor("conference", conf=conf)
    f.answer = [state["u1"]]
    f.ask("multi", "conf-where", wordings("conf-where", conf=conf), [state["a"], state["u2"]], [("conf", conf)])
    f.ask("single", "conf-talk", wordings("conf-talk", conf=conf), [state["u1"]], [("conf", conf)])
    f.ask("paraphrase", "conf-para", wordings("conf-para"), [state["u1"]], [("conf_any",)])
    return True


def _dish(u: User) -> str:
    banned = u.excluded_tags()
    options = [d for d, tags in DISHES if not tags & banned]
    return u.take("dish", options)


def _dish_fact(c: Session, turn: Turn, dish: str) -> Fact:
    f = c.fact("dish", [("dish", dish)], [turn])
    return f.grouped("dish", dish, [turn])


def episode_visit(c: Session, budget: int) -> bool:
    u, rng = c.user, c.rng
    person = u.person("visit", partner=False, friends=False)
    who = refer_to(person)
    pr = pronouns(person["gender"])
    arrive = c.day + timedelta(days=rng.randint(1, 6))
    wd = WEEKDAYS[arrive.weekday()]
    dish = _dish(u)
    qa = rng.random() < 0.5
    state: dict[str, Turn] = {}
    slots = {"who": who["text"], "name": person["name"], "rel": person["rel"], "city": person["city"], "wd": wd, **pr,
             "dish": dish}

    def visit() -> None:
        state["visit"] = c.say("user", c.pick("visit:1", **slots))
        if qa:
            c.say("assistant", c.pick("visit:qa", **slots))
            state["dish"] = c.say("user", c.pick("visit:qa2", **slots))
            c.say("assistant", c.ack("cooking"))
        else:
            c.say("assistant", c.ack("visit"))

    def cook() -> None:
        state["dish"] = c.say("user", c.pick("visit:dish", **slots))
        c.say("assistant", c.ack("cooking"))

    blocks = [(2, visit)] if qa else [(1, visit), (1, cook)]
    c.weave("cooking", blocks, budget)
    key = ("visit", person["rel"])
    f = c.fact("visit", [key], [state["visit"]])
    f.t_anchor = anchor("visit", rel=person["rel"])
    f.answer = [state["visit"]]
    _dish_fact(c, state["dish"], dish)
    f.ask("temporal", "visit-cook", wordings("visit-cook", rel=person["rel"]), [state["visit"], state["dish"]], [key, ("dish", dish)])
    f.ask("single", "visit-when", wordings("visit-when", rel=person["rel"], **pr), [state["visit"]], [key])
    f.ask("paraphrase", "visit-para", wordings("visit-para", who["paras"], **pr), [state["visit"]], [key])
    return True


def episode_mealprep(c: Session, budget: int) -> bool:
    dish = _dish(c.user)
    state: dict[str, Turn] = {}

    def cook() -> None:
        state["t"] = c.say("user", c.pick("prep:1", dish=dish))
        c.say("assistant", c.ack("cooking"))

    c.weave("cooking", [(1, cook)], budget)
    _dish_fact(c, state["t"], dish)
    return True


def episode_restaurant(c: Session, budget: int) -> bool:
    u, rng = c.user, c.rng
    banned = u.excluded_tags()
    rest, cuisine, loved, _tags = u.take("rest", [r for r in RESTAURANTS if not r[3] & banned])
    street = rng.choice(STREETS)
    occasions = [o for o in OCCASIONS if u.p["partner"] or not o[2]]
    occ = u.take("occasion", occasions, unique=True)
    state: dict[str, Turn] = {}
    slots = {"rest": rest, "cuisine": cuisine, "a_cuisine": with_article(cuisine), "street": street, "loved": loved,
             "occ": occ[0] if occ else ""}

    def went() -> None:
        state["went"] = c.say("user", c.pick("rest:1" if occ else "rest:1b", **slots))
        c.say("assistant", c.ack("dining"))

    def dish() -> None:
        state["dish"] = c.say("user", c.pick("rest:2", **slots))
        c.say("assistant", c.reply("rest:2a"))

    def decoy() -> None:
        other, other_cuisine, _, _ = u.take("rest", RESTAURANTS)
        friend = rng.choice(u.p["friends"])["name"]
        c.ex(c.line("rest:decoy", friend=friend, rest=other, cuisine=other_cuisine), c.aside("rest:decoy-ack"))

    blocks = [(1, went), (1, dish)]
    if c.decoy(0.15):
        blocks.insert(rng.randrange(3), (1, decoy, True))
    c.weave("dining", blocks, budget)
    f = c.fact("restaurant", [("rest", rest)] + ([("occasion", occ[0])] if occ else []), [state["went"], state["dish"]])
    f.grouped("restaurant", rest, [state["went"]])
    f.ask("single", "rest-dish", wordings("rest-dish", rest=rest), [state["dish"]], [("rest", rest)])
    if occ:
        key = ("occasion", occ[0])
        f.ask("single", "rest-occ", wordings("rest-occ", occasion=occ[0]), [state["went"]], [key])
        f.ask("multi", "rest-multi", wordings("rest-multi", occasion=occ[0]), [state["went"], state["dish"]], [key])
        f.ask("paraphrase", "rest-para", wordings("rest-para", why=occ[1]), [state["went"]], [key])
    return True


def episode_reading(c: Session, budget: int) -> bool:
    u, rng = c.user, c.rng
    title, author = u.take("book", BOOKS)
    state: dict[str, Turn] = {}

    def reading() -> None:
        state["t"] = c.say("user", c.pick("book:1", title=title, author=author, op=u.take("read-op", READ_OPINIONS)))
        c.say("assistant", c.ack("books"))

    def decoy() -> None:
        other, _ = u.take("book", BOOKS)
        lender = rng.choice(u.p["relatives"])
        c.ex(c.line("book:decoy", rel=lender["rel"], title=other), c.aside("book:decoy-ack"))

    blocks = [(1, reading)]
    if c.decoy(0.12):
        blocks.append((1, decoy, True))
    c.weave("books", blocks, budget)
    f = c.fact("book", [("book", title)], [state["t"]])
    f.grouped("book", title, [state["t"]])
    f.ask("single", "book", wordings("book", title=title), [state["t"]], [("book", title)])
    return True


def episode_film(c: Session, budget: int) -> bool:
    u = c.user
    film = u.take("film", FILMS)
    state: dict[str, Turn] = {}

    def watched() -> None:
        state["t"] = c.say("user", c.pick("film:1", film=film, wd=WEEKDAYS[(c.day - timedelta(days=c.rng.randint(1, 3))).weekday()],
                                          op=c.rng.choice(FILM_OPINIONS)))
        c.say("assistant", c.ack("films"))

    c.weave("films", [(1, watched)], budget)
    f = c.fact("film", [("film", film)], [state["t"]])
    f.grouped("film", film, [state["t"]])
    f.ask("single", "film", wordings("film", film=film), [state["t"]], [("film", film)])
    return True


def episode_gift(c: Session, budget: int) -> bool:
    u, rng = c.user, c.rng
    person = u.person("gift", partner=False)
    who = refer_to(person)
    pr = pronouns(person["gender"])
    hobby, gift = person["hobby"]
    bday = c.day + timedelta(days=rng.randint(5, 25))
    amount = rng.choice([30, 40, 50, 60, 75, 80, 100, 120, 150]) * u.p["money_scale"]
    slots = {"who": who["text"], "name": person["name"], "rel": person["rel"], "hobby": hobby, "gift": gift,
             "nth": ordinal(bday.day), "amt": amount, "cur": u.p["currency"], "wd": WEEKDAYS[(bday - timedelta(days=2)).weekday()],
             "whose": f"my {person['rel']}'s" if person["rel"] != "friend" else f"my friend {person['name']}'s", **pr}
    state: dict[str, Turn] = {}

    def ask() -> None:
        state["u1"] = c.say("user", c.pick("gift:1", **slots))
        c.say("assistant", c.pick("gift:2"))
        state["u2"] = c.say("user", c.pick("gift:3", **slots))
        c.say("assistant", c.reply("gift:4", **slots))

    def bought() -> None:
        state["u3"] = c.say("user", c.pick("gift:5", **slots))
        c.say("assistant", c.ack("gift"))

    c.weave("gift", [(2, ask), (1, bought)], budget, {"hobby": hobby})
    key = ("gift", who["key"])
    f = c.fact("gift", [key, ("gift_para", who["para_key"])], [state["u1"], state["u2"], state["u3"]])
    f.t_anchor = anchor("gift", who=who["q"])
    f.answer = [state["u1"]]
    f.ask("single", "gift-what", wordings("gift-what", who=who["q"], **pr), [state["u3"]], [key])
    f.ask("single", "gift-when", wordings("gift-when", who=who["q"]), [state["u1"]], [key])
    f.ask("multi", "gift-budget", wordings("gift-budget", who=who["q"]), [state["u1"], state["u2"]], [key])
    f.ask("multi", "gift-both", wordings("gift-both", who=who["q"], **pr), [state["u1"], state["u3"]], [key])
    f.ask("paraphrase", "gift-para", wordings("gift-para", who["paras"]), [state["u1"], state["u3"]],
          [("gift_para", who["para_key"])])
    return True


def episode_weekend(c: Session, budget: int) -> bool:
    u, rng = c.user, c.rng
    act = u.take("weekend", WEEKEND_ACTS)
    state: dict[str, Turn] = {}

    def plan() -> None:
        state["t"] = c.say("user", c.pick("wk:1", act=act))
        c.say("assistant", c.ack("weekend"))

    def decoy() -> None:
        other = u.take("weekend", WEEKEND_ACTS)
        friend = rng.choice(u.p["friends"])["name"]
        c.ex(c.line("wk:decoy", friend=friend, plan=other), c.aside("wk:decoy-ack"))

    blocks = [(1, plan)]
    if c.decoy(0.15):
        blocks.insert(rng.randrange(2), (1, decoy, True))
    c.weave("weekend", blocks, budget)
    f = c.fact("weekend", [("weekend", act)], [state["t"]])
    f.grouped("weekend", act, [state["t"]])
    return True


def episode_home(c: Session, budget: int) -> bool:
    u = c.user
    room = u.take("room", ROOMS, unique=True)
    if room is None:
        return False
    state: dict[str, Turn] = {}

    def paint() -> None:
        state["t"] = c.say("user", c.pick("home:1", room=room[0], colour=room[1]))
        c.say("assistant", c.ack("home"))

    c.weave("home", [(1, paint)], budget)
    f = c.fact("room", [("room", room[0])], [state["t"]])
    f.ask("single", "home", wordings("home", room=room[0]), [state["t"]], [("room", room[0])])
    return True


def profile_kinds(u: User) -> list[str]:
    """The profile facts this persona has to tell."""
    p = u.p
    kinds = ["job", "hometown", "commute"]
    if p["allergy"]:
        kinds.append("allergy")
    if p["diet"][0] != "omnivore":
        kinds.append("diet")
    if p["instrument"]:
        kinds.append("instrument")
    if p["partner"]:
        kinds.append("partner")
    return kinds


def write_profile(c: Session, kind: str) -> None:
    """One profile fact, said in passing, with a direct question and a paraphrased one."""
    p, rng = c.user.p, c.rng
    name, paras = kind, None
    if kind == "job":
        t = c.say("user", c.pick("prof:job", title=with_article(p["job"]["title"]), employer=p["job"]["employer"]))
    elif kind == "allergy":
        t = c.say("user", c.pick("prof:allergy", a=p["allergy"][0]))
    elif kind == "diet":
        t = c.say("user", c.pick("prof:diet", diet=p["diet"][0], n=rng.randint(2, 15), detail=p["diet"][2]))
    elif kind == "hometown":
        t = c.say("user", c.pick("prof:town", town=p["hometown"], detail=p["hometown_detail"]))
    elif kind == "instrument":
        t = c.say("user", c.pick("prof:inst", inst=p["instrument"],
                                 month=MONTHS[(c.day - timedelta(days=rng.randint(40, 150))).month - 1]))
    elif kind == "partner":
        partner = p["partner"]
        t = c.say("user", c.pick("prof:partner", name=partner["name"], job=partner["job"], detail=partner["detail"],
                                 **pronouns(partner["gender"])))
        paras = PARTNER_PARAS
    else:
        verb, n, rest = p["commute"]
        t = c.say("user", c.line("prof:commute", verb=verb, n=n, rest=rest))
        name = "commute-" + verb
    c.say("assistant", c.ack("profile"))
    f = c.fact(kind, [(kind,)], [t])
    f.ask("single", "profile-" + kind, wordings(f"profile-{name}", diet=p["diet"][0]), [t], [(kind,)])
    f.ask("paraphrase", "profile-" + kind, wordings(f"profile-{name}-para", paras), [t], [(kind,)])
