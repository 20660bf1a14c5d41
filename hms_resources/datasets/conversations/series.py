"""Episodes that come back over sessions and may change what was said before: the pets, a move that
falls through, appointments that move, savings that change, language lessons, training and injuries,
work deadlines that slip. A changed fact goes stale, and its questions then need both turns."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hms_resources.datasets.conversations.data import (
    APPOINTMENT_LABELS,
    APPOINTMENTS,
    BODYPARTS,
    BUDGET_GOALS,
    COMPANIES,
    HOME_CITIES,
    INJURY_CAUSES,
    PET_NAMES,
    PETS,
    RACES,
    SAVINGS_DOWN_REASONS,
    SAVINGS_UP_REASONS,
    SLIP_REASONS,
    SPECIES_PARA,
    TUTOR_HOMETOWNS,
    VET_REASONS,
    anchor,
    wordings,
)
from hms_resources.datasets.conversations.writing import (
    MONTHS,
    NUMBERS,
    WEEKDAYS,
    Session,
    Turn,
    clock_phrase,
    date_phrase,
    day_phrase,
    pronouns,
    with_article,
)


def episode_pet(c: Session, budget: int) -> bool:
    """The first pet, then the second if there is one, then a vet visit for each."""
    u, rng = c.user, c.rng
    s = u.series.setdefault("pet", {"intro": {}, "vet": set(), "last": -9})
    pets = u.p["pets"]
    if c.index - s["last"] < 2:
        return False
    todo = None
    if 0 not in s["intro"]:
        todo = ("intro", 0)
    elif len(pets) > 1 and 1 not in s["intro"]:
        todo = ("intro", 1)
    else:
        for i in s["intro"]:
            if i not in s["vet"]:
                todo = ("vet", i)
                break
    if todo is None:
        return False
    what, i = todo
    pet = pets[i]
    pr = pronouns(pet["gender"])
    slots = {"name": pet["name"], "breed": pet["breed"], "age": NUMBERS[pet["age"]], "quirk": pet["quirk"], "sp": pet["species"], **pr}
    state: dict[str, Turn] = {}

    def intro() -> None:
        state["t"] = c.say("user", c.pick("pet:intro" if i == 0 else "pet:second", **slots))
        c.say("assistant", c.ack("pet"))

    def vet() -> None:
        state["t"] = c.say("user", c.pick("pet:vet", wd=WEEKDAYS[(c.day + timedelta(days=rng.randint(1, 6))).weekday()],
                                          reason=rng.choice(VET_REASONS), **slots))
        c.say("assistant", c.reply("pet:vet-ack"))

    def decoy() -> None:
        other = u.take("pet", PET_NAMES)
        breed = rng.choice(PETS["dog"])
        c.ex(c.line("pet:decoy", breed=breed, name=other), c.aside("pet:decoy-ack"))

    blocks = [(1, intro if what == "intro" else vet)]
    if c.decoy(0.1):
        blocks.append((1, decoy, True))
    c.weave("pet", blocks, budget)
    s["last"] = c.index
    t = state["t"]
    species = pet["species"]
    if what == "intro":
        s["intro"][i] = c.fact("pet", [("species", species)], [t])
        f = s["intro"][i]
        f.ask("paraphrase", "pet-breed", wordings("pet-breed", SPECIES_PARA[species]), [t], [("species", species)])
        if i == 1:
            first = s["intro"][0]
            sp0 = pets[0]["species"]
            both = wordings("pet-both-same", species=species) if sp0 == species else wordings("pet-both-mixed", first=sp0, species=species)
            f.ask("multi", "pet-both", both, [first.turns[0], t])
    else:
        s["vet"].add(i)
        f = c.fact("vet", [("vet", pet["name"])], [t])
        f.t_anchor = anchor("vet", name=pet["name"])
        f.answer = [t]
        f.ask("single", "pet-vet", wordings("pet-vet", name=pet["name"]), [t], [("vet", pet["name"])])
        f.ask("paraphrase", "pet-vet-para", wordings("pet-vet-para", SPECIES_PARA[species]), [t],
              [("species", species), ("vet", pet["name"])])
    return True


def episode_move(c: Session, budget: int) -> bool:
    """A move announced, then redirected to another city, then done."""
    u = c.user
    s = u.series.setdefault("move", {"stage": 0, "last": -9})
    if s["stage"] >= 3 or c.index - s["last"] < 2:
        return False
    stage = s["stage"]
    state: dict[str, Turn] = {}
    if stage == 0:
        s["c1"] = u.take("home", HOME_CITIES)
        month = MONTHS[(c.day + timedelta(days=c.rng.randint(20, 40))).month - 1]

        def block() -> None:
            state["t"] = c.say("user", c.pick("move:1", c1=s["c1"], month=month, home=u.p["home"]))
            c.say("assistant", c.ack("move"))
    elif stage == 1:
        s["c2"] = u.take("home", HOME_CITIES)

        def block() -> None:
            state["t"] = c.say("user", c.pick("move:2", c1=s["c1"], c2=s["c2"]))
            c.say("assistant", c.reply("move:2a"))
    else:
        def block() -> None:
            c.ex(c.pick("move:3"), c.pick("move:3a"))

    c.weave("move", [(1, block)], budget)
    s["stage"], s["last"] = stage + 1, c.index
    if stage == 0:
        f = c.fact("move", [("move",)], [state["t"]])
        f.t_anchor = anchor("move", city=s["c1"])
        f.answer = [state["t"]]
        s["fact"] = f
    elif stage == 1:
        first = s["fact"]
        f = c.fact("move-change", [], [state["t"]])
        ev = [first.turns[0], state["t"]]
        first.stale = True
        f.ask("multi", "move", wordings("move-now"), ev)
        f.ask("temporal", "move", wordings("move-before"), ev)
        f.ask("paraphrase", "move", wordings("move-para"), ev)
    return True


def _appointment_time(c: Session) -> tuple[datetime, str]:
    when = c.day + timedelta(days=c.rng.randint(2, 20))
    while when.weekday() >= 5:
        when += timedelta(days=1)
    return when, clock_phrase(c.rng.randint(8, 17), c.rng.choice([0, 0, 15, 30, 45]))


def episode_health(c: Session, budget: int) -> bool:
    """An appointment booked, or an earlier one moved."""
    u, rng = c.user, c.rng
    pending = [f for f in u.facts if f.kind == "appt" and not f.stale and c.index - f.session >= 1
               and f.when > c.day + timedelta(days=1)]
    state: dict[str, Turn] = {}
    if pending and rng.random() < (0.6 if u.hard else 0.3):
        orig = rng.choice(pending)
        short = APPOINTMENTS[orig.appointment][1]
        when, clock = _appointment_time(c)

        def moved() -> None:
            state["t"] = c.say("user", c.pick("appt:2", short=short, day=day_phrase(when), clock=clock))
            c.say("assistant", c.reply("appt:2a"))

        c.weave("health", [(1, moved)], budget)
        orig.stale = True
        f = c.fact("appt-moved", [], [state["t"]])
        ev = [orig.turns[0], state["t"]]
        f.ask("multi", "appt", wordings("appt-now", short=short), ev, orig.keys[:1])
        f.ask("temporal", "appt", wordings("appt-before", short=short), ev, orig.keys[:1])
        return True

    kind = u.take("appt", list(APPOINTMENTS))
    phrase, short, reasons, paras = APPOINTMENTS[kind]
    when, clock = _appointment_time(c)

    def booked() -> None:
        state["t"] = c.say("user", c.pick("appt:1", phrase=phrase, a_phrase=with_article(phrase), day=day_phrase(when), clock=clock,
                                          reason=rng.choice(reasons)))
        c.say("assistant", c.ack("health"))

    c.weave("health", [(1, booked)], budget)
    key = ("appt", kind)
    f = c.fact("appt", [key], [state["t"]])
    f.appointment, f.when = kind, when
    f.grouped("appointment", APPOINTMENT_LABELS[kind], [state["t"]])
    f.t_anchor = anchor("appt", short=short)
    f.ask("single", "appt", wordings("appt", short=short), [state["t"]], [key], fresh_only=True)
    f.ask("paraphrase", "appt-para", list(paras), [state["t"]], [key], fresh_only=True)
    return True


def episode_budget(c: Session, budget: int) -> bool:
    """A monthly savings target, then a change to it."""
    u, rng = c.user, c.rng
    s = u.series.setdefault("budget", {"stage": 0, "last": -9})
    if s["stage"] >= 2 or c.index - s["last"] < 2:
        return False
    cur = u.p["currency"]
    state: dict[str, Turn] = {}
    if s["stage"] == 0:
        s["goal"] = rng.choice([g for g in BUDGET_GOALS if u.p["partner"] or "our" not in g[0]])
        s["amt"] = rng.choice([150, 200, 250, 300, 400, 500]) * u.p["money_scale"]

        def block() -> None:
            state["t"] = c.say("user", c.pick("budget:1", amt=s["amt"], cur=cur, goal=s["goal"][0]))
            c.say("assistant", c.ack("money"))
    else:
        up = rng.random() < 0.5
        amt2 = s["amt"] + rng.choice([50, 100, 150]) * u.p["money_scale"] * (1 if up else -1)
        amt2 = amt2 if amt2 > 0 else s["amt"] + 100 * u.p["money_scale"]

        def block() -> None:
            if amt2 > s["amt"]:
                text = c.pick("budget:up", amt=amt2, cur=cur, why=rng.choice(SAVINGS_UP_REASONS))
            else:
                text = c.pick("budget:down", amt=amt2, cur=cur, why=rng.choice(SAVINGS_DOWN_REASONS))
            state["t"] = c.say("user", text)
            c.say("assistant", c.reply("budget:ack2"))

    c.weave("money", [(1, block)], budget)
    goal, goal_para = s["goal"]
    if s["stage"] == 0:
        f = c.fact("budget", [("budget",)], [state["t"]])
        f.ask("single", "budget", wordings("budget", goal=goal), [state["t"]], [("budget",)], fresh_only=True)
        s["fact"] = f
    else:
        first = s["fact"]
        first.stale = True
        f = c.fact("budget-change", [], [state["t"]])
        ev = [first.turns[0], state["t"]]
        f.ask("multi", "budget", wordings("budget-now", goal=goal), ev)
        f.ask("temporal", "budget", wordings("budget-before"), ev)
        if goal_para:
            f.ask("paraphrase", "budget", wordings("budget-para", goal=goal_para), ev)
    s["stage"], s["last"] = s["stage"] + 1, c.index
    return True


def episode_language(c: Session, budget: int) -> bool:
    """Lessons started with a tutor, then a lesson's topic."""
    u, rng = c.user, c.rng
    s = u.series.setdefault("language", {"stage": 0, "last": -9})
    if s["stage"] >= 2 or c.index - s["last"] < 1:
        return False
    lang, grammar = u.p["language"]
    state: dict[str, Any] = {}
    if s["stage"] == 0:
        tutor, gender = u.name()
        wd = rng.choice(WEEKDAYS[:5])
        qa = rng.random() < 0.5
        slots = {"lang": lang, "tutor": tutor, "wd": wd, **pronouns(gender), "place": rng.choice(TUTOR_HOMETOWNS)}

        def block() -> None:
            if not qa:
                t = c.say("user", c.pick("lang:1", **slots))
                c.say("assistant", c.ack("language"))
                state["ev"] = [t]
            else:
                t1 = c.say("user", c.pick("lang:qa1", **slots))
                c.say("assistant", c.pick("lang:qa-a"))
                t2 = c.say("user", c.pick("lang:qa2", **slots))
                c.say("assistant", c.ack("language"))
                state["ev"] = [t1, t2]

        c.weave("language", [(1 if not qa else 2, block)], budget, {"lang": lang})
        f = c.fact("language", [("lang",)], state["ev"])
        f.t_anchor = anchor("language", lang=lang)
        f.answer = state["ev"][:1]
        if not qa:
            f.ask("single", "lang-tutor", wordings("lang-tutor", lang=lang), state["ev"], [("lang",)])
        else:
            f.ask("multi", "lang-qa", wordings("lang-qa", lang=lang), state["ev"], [("lang",)])
        f.ask("paraphrase", "lang-para", wordings("lang-para"), state["ev"], [("lang",)])
    else:
        def block() -> None:
            state["t"] = c.say("user", c.pick("lang:2", lang=lang, grammar=grammar))
            c.say("assistant", c.ack("language"))

        c.weave("language", [(1, block)], budget, {"lang": lang})
        f = c.fact("lang-lesson", [("lang-lesson",)], [state["t"]])
        f.ask("single", "lang-topic", wordings("lang-topic", lang=lang), [state["t"]], [("lang-lesson",)])
    s["stage"], s["last"] = s["stage"] + 1, c.index
    return True


def episode_fitness(c: Session, budget: int) -> bool:
    """A race entered, or (once) an injury."""
    u, rng = c.user, c.rng
    s = u.series.setdefault("fitness", {"injury": False})
    state: dict[str, Turn] = {}
    if not s["injury"] and rng.random() < 0.35:
        part, cause = rng.choice(BODYPARTS), rng.choice(INJURY_CAUSES)

        def hurt() -> None:
            state["t"] = c.say("user", c.pick("fit:hurt", part=part, cause=cause))
            c.say("assistant", c.ack("fitness"))

        c.weave("fitness", [(1, hurt)], budget)
        s["injury"] = True
        f = c.fact("injury", [("injury",)], [state["t"]])
        f.t_anchor = anchor("injury", part=part)
        f.answer = [state["t"]]
        f.ask("single", "injury", wordings("injury", part=part), [state["t"]], [("injury",)])
        f.ask("paraphrase", "injury", wordings("injury-para"), [state["t"]], [("injury",)])
        return True
    race = u.take("race", RACES)
    when = c.day + timedelta(days=rng.randint(20, 70))

    def signup() -> None:
        state["t"] = c.say("user", c.pick("fit:race", race=race, date=date_phrase(when)))
        c.say("assistant", c.ack("fitness"))

    c.weave("fitness", [(1, signup)], budget)
    f = c.fact("race", [("race", race)], [state["t"]])
    f.grouped("race", race, [state["t"]])
    f.t_anchor = anchor("race", race=race)
    f.ask("single", "race", wordings("race", race=race), [state["t"]], [("race", race)])
    return True


def episode_work(c: Session, budget: int) -> bool:
    """A project with a deadline (and sometimes a colleague), or an earlier deadline slipping."""
    u, rng = c.user, c.rng
    state: dict[str, Turn] = {}
    open_projects = [f for f in u.facts if f.kind == "project" and not f.stale and c.index - f.session >= 2
                     and f.when > c.day + timedelta(days=3)]
    if open_projects and rng.random() < (0.6 if u.hard else 0.35):
        orig = rng.choice(open_projects)
        project = orig.label
        when = orig.when + timedelta(days=rng.randint(7, 30))

        def slip() -> None:
            state["t"] = c.say("user", c.pick("work:slip", project=project, date=date_phrase(when), why=rng.choice(SLIP_REASONS)))
            c.say("assistant", c.reply("work:slip-ack"))

        c.weave("work", [(1, slip)], budget, {"project": project})
        orig.stale = True
        f = c.fact("project-slip", [], [state["t"]])
        ev = [orig.turns[0], state["t"]]
        f.ask("multi", "proj-deadline", wordings("proj-deadline-now", project=project), ev, [("proj", project)])
        return True
    project = u.take("project", u.p["job"]["projects"], unique=True)
    if project is None:
        return False
    when = c.day + timedelta(days=rng.randint(10, 45))
    colleague, gender = u.name()
    pr = pronouns(gender)
    qa = rng.random() < 0.5

    def lead() -> None:
        state["u1"] = c.say("user", c.pick("work:1", project=project, date=date_phrase(when)))
        if qa:
            state["a"] = c.say("assistant", c.pick("work:2", project=project))
            state["u2"] = c.say("user", c.pick("work:3", name=colleague, company=rng.choice(COMPANIES), **pr))
        c.say("assistant", c.ack("work"))

    c.weave("work", [(2 if qa else 1, lead)], budget, {"project": project})
    f = c.fact("project", [("proj", project)], [state["u1"]] + ([state["u2"]] if qa else []))
    f.label = project
    f.when = when
    f.t_anchor = anchor("project", project=project)
    f.answer = [state["u1"]]
    f.ask("single", "proj-deadline", wordings("proj-deadline", project=project), [state["u1"]], [("proj", project)], fresh_only=True)
    if qa:
        f.ask("multi", "proj-who", wordings("proj-who", project=project), [state["a"], state["u2"]], [("proj", project)])
    return True
