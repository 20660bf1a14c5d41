"""The conversation generator's pools and wordings, read from `templates/conversation_*.json` into the
shapes the generator draws from (tuples to unpack, sets of what a diet or an allergy rules out)."""

from __future__ import annotations

from typing import Any

from hms_resources.datasets import read_templates

_personas = read_templates("conversation_personas")
_topics = read_templates("conversation_topics")
_smalltalk = read_templates("conversation_smalltalk")
_turns = read_templates("conversation_turns")
_questions = read_templates("conversation_questions")

# Personas.
FEMALE: list[str] = _personas["female_names"]
MALE: list[str] = _personas["male_names"]
FIRST_NAMES_SET = frozenset(FEMALE + MALE)
USER_NAMES: list[str] = _personas["user_names"]
HOME_CITIES: list[str] = _personas["home_cities"]
CURRENCY: dict[str, str] = _personas["currencies"]
DEFAULT_CURRENCY: str = _personas["default_currency"]
MONEY_SCALE: dict[str, int] = _personas["money_scale"]
HOMETOWNS: list[str] = _personas["hometowns"]
HOMETOWN_DETAILS: list[str] = _personas["hometown_details"]
JOBS: list[dict[str, Any]] = _personas["jobs"]
PARTNER_JOBS = [(p["job"], p["detail"]) for p in _personas["partner_jobs"]]
PARTNER_PARAS: list[str] = _personas["partner_paraphrases"]
FRIEND_PARAS: list[str] = _personas["friend_paraphrases"]
RELATIONS = {rel: (r["gender"], r["paraphrases"]) for rel, r in _personas["relations"].items()}
HOBBIES = [(h["hobby"], h["gift"]) for h in _personas["hobbies"]]
PETS: dict[str, list[str]] = _personas["pet_breeds"]
SPECIES_PARA: dict[str, list[str]] = _personas["species_paraphrases"]
PET_NAMES: list[str] = _personas["pet_names"]
PET_QUIRKS: list[str] = _personas["pet_quirks"]
VET_REASONS: list[str] = _personas["vet_reasons"]
ALLERGENS = [(a["allergen"], a["rules_out"]) for a in _personas["allergens"]]
DIETS = [(d["diet"], frozenset(d["rules_out"]), d["detail"]) for d in _personas["diets"]]
INSTRUMENTS: list[str] = _personas["instruments"]
COMMUTES = [(c["verb"], c["rest"]) for c in _personas["commutes"]]
COMMUTE_KM = {c["verb"]: tuple(c["km"]) for c in _personas["commutes"]}
LANGUAGES = [(lang["language"], lang["grammar"]) for lang in _personas["languages"]]
TUTOR_HOMETOWNS: list[str] = _personas["tutor_hometowns"]

# Topics.
DESTINATIONS = [(d["city"], d["wish"]) for d in _topics["destinations"]]
LODGINGS: list[str] = _topics["lodgings"]
COMPANIES: list[str] = _topics["companies"]
SLIP_REASONS: list[str] = _topics["slip_reasons"]
DISHES = [(d["dish"], frozenset(d["rules_out"])) for d in _topics["dishes"]]
BOOKS = [(b["title"], b["author"]) for b in _topics["books"]]
READ_OPINIONS: list[str] = _topics["reading_opinions"]
FILMS: list[str] = _topics["films"]
FILM_OPINIONS: list[str] = _topics["film_opinions"]
RESTAURANTS = [(r["name"], r["cuisine"], r["loved"], frozenset(r["rules_out"])) for r in _topics["restaurants"]]
STREETS: list[str] = _topics["streets"]
OCCASIONS = [(o["occasion"], o["paraphrase"], o["with_partner"]) for o in _topics["occasions"]]
WEEKEND_ACTS: list[str] = _topics["weekend_plans"]
APPOINTMENTS = {kind: (a["phrase"], a["short"], a["reasons"], a["questions"]) for kind, a in _topics["appointments"].items()}
APPOINTMENT_LABELS = {kind: a["label"] for kind, a in _topics["appointments"].items()}
BODYPARTS: list[str] = _topics["body_parts"]
INJURY_CAUSES: list[str] = _topics["injury_causes"]
RACES: list[str] = _topics["races"]
BUDGET_GOALS = [(g["goal"], g["paraphrase"]) for g in _topics["savings_goals"]]
SAVINGS_UP_REASONS: list[str] = _topics["savings_up_reasons"]
SAVINGS_DOWN_REASONS: list[str] = _topics["savings_down_reasons"]
ROOMS = [(r["room"], r["colour"]) for r in _topics["rooms"]]

# Small talk: filler exchanges (user variants, assistant variants), lead-ins, openers and closers.
FILLER = {topic: [(tuple(e["user"]), tuple(e["assistant"])) for e in exchanges] for topic, exchanges in _smalltalk["filler"].items()}
USER_PREFIXES: list[str] = _smalltalk["user_prefixes"]
USER_ASIDES: list[str] = _smalltalk["user_asides"]
ASSISTANT_LEADS: list[str] = _smalltalk["assistant_leads"]
ASSISTANT_FOLLOWUPS: list[str] = _smalltalk["assistant_followups"]
OPEN_GREETINGS: list[str] = _smalltalk["greetings"]
OPEN_CONTEXTS: list[str] = _smalltalk["opening_contexts"]
OPEN_REPLIES: list[str] = _smalltalk["opening_replies"]
CLOSE_THANKS: list[str] = _smalltalk["thanks"]
CLOSE_LEAVING: list[str] = _smalltalk["leaving"]
CLOSE_REPLIES: list[str] = _smalltalk["closing_replies"]
CLOSE_WISHES: list[str] = _smalltalk["closing_wishes"]
ACKS: dict[str, list[str]] = _smalltalk["acknowledgements"]
TIME_WORDS = {word: range(*hours) for word, hours in _smalltalk["time_words"].items()}

# Wordings of the turns that state facts, and of the questions about them.
TURN_CHOICES: dict[str, list[str]] = _turns["choices"]
TURN_LINES: dict[str, str] = _turns["lines"]
GROUP_QUESTIONS: dict[str, dict[str, Any]] = _questions["groups"]
SAME_DAY_QUESTION: str = _questions["same_day"]
ANCHORS: dict[str, str] = _questions["anchors"]
PARAPHRASE_STOPWORDS = frozenset(_questions["paraphrase_stopwords"])
_WORDINGS: dict[str, str | list[str]] = _questions["facts"]


def wordings(question: str, paras: list[str] | None = None, /, **slots: Any) -> list[str]:
    """The wordings of `question`, filled in; with `paras`, each wording once for each paraphrase."""
    found = _WORDINGS[question]
    texts = [found] if isinstance(found, str) else found
    if paras is None:
        return [text.format(**slots) for text in texts]
    return [text.format(para=para, **slots) for para in paras for text in texts]


def anchor(fact: str, /, **slots: Any) -> str:
    """How a same-day question refers to the day a fact was said (`told you about the Kyoto trip`)."""
    return ANCHORS[fact].format(**slots)
