"""A seeded generator of a synthetic multi-session conversational retrieval dataset (JSON Lines).

Each user is a persona drawn from large pools; sessions a few days apart are user/assistant talks on one or
two recurring topics (trips, cooking, appointments, books, a move...), mostly templated filler around the
turns that state a fact. Questions come from those facts, with exactly the answering turns as evidence;
paraphrases are checked to share no content word with it. The same arguments give the same records."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

QUESTION_CATEGORIES = ("single", "multi", "temporal", "paraphrase")

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_PATH = DATA_DIR / "conversations.jsonl"
HARD_PATH = DATA_DIR / "conversations_hard.jsonl"
DEFAULT_ARGS: dict[str, Any] = {"users": 6, "sessions_per_user": 20, "seed": 11, "hard": False}
HARD_ARGS: dict[str, Any] = {"users": 6, "sessions_per_user": 40, "seed": 13, "hard": True}

# --------------------------------------------------------------------------------------------------
# Content words, as the paraphrase check sees them.

STOPWORDS = frozenset(
    """a an the and or but if of to in on at for with from by about into over after before up out off as so
    than then too very just also not no yes i me my mine myself im ive id ill we us our ours you your youre he
    him his she her they them their it its this that these those there here what whats which who whom whose
    when where why how is am are was were be been being do does did doing done have has had will would shall
    should can could may might must dont didnt doesnt isnt wasnt cant wont s t m d ll re ve""".split()
)


def content_words(text: str) -> set[str]:
    """Lowercase, strip punctuation, drop stopwords, strip a naive plural `s`."""
    words = set()
    for word in re.sub(r"[^\w\s]", "", text.lower()).split():
        if word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s"):
            word = word[:-1]
        if word not in STOPWORDS:
            words.add(word)
    return words


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly", "er"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _strict_words(text: str) -> set[str]:
    lowered = text.lower()
    words = content_words(text) | content_words(re.sub(r"[^\w\s]", " ", lowered))
    return {_stem(w) for w in words if len(w) > 1}


def shares_content_word(question: str, evidence: list[str]) -> bool:
    """Stricter than `content_words`: also catches words with a common stem or a 5-letter prefix."""
    asked = _strict_words(question)
    said: set[str] = set()
    for text in evidence:
        said |= _strict_words(text)
    for a in asked:
        for b in said:
            if a == b or (len(a) >= 5 and len(b) >= 5 and a[:5] == b[:5]):
                return True
    return False


# --------------------------------------------------------------------------------------------------
# Dates.

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _ord(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _day(d: datetime) -> str:
    """`Thursday the 19th`."""
    return f"{WEEKDAYS[d.weekday()]} the {_ord(d.day)}"


def _date(d: datetime) -> str:
    """`April 3rd`."""
    return f"{MONTHS[d.month - 1]} {_ord(d.day)}"


def _span(a: datetime, b: datetime) -> str:
    if a.month == b.month:
        return f"from the {_ord(a.day)} to the {_ord(b.day)} of {MONTHS[a.month - 1]}"
    return f"from {_date(a)} to {_date(b)}"


def _clock(hour: int, minute: int) -> str:
    half = "am" if hour < 12 else "pm"
    h12 = hour % 12 or 12
    return f"{h12}{half}" if minute == 0 else f"{h12}:{minute:02d}{half}"


def _window(d: datetime) -> str:
    part = "early" if d.day <= 10 else "mid" if d.day <= 20 else "late"
    return f"in {part}-{MONTHS[d.month - 1]}" if part == "mid" else f"in {part} {MONTHS[d.month - 1]}"


def _timestamp(d: datetime) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(phrase: str) -> str:
    """`a` or `an` before `phrase`, with the phrase."""
    return ("an " if phrase[:1].lower() in "aeio" or phrase.startswith("HR") else "a ") + phrase


NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


# --------------------------------------------------------------------------------------------------
# Persona pools.

FEMALE = ["Ana", "Beatriz", "Chloe", "Dalia", "Eva", "Farah", "Grace", "Hana", "Irene", "Julia", "Kira", "Lucia",
          "Marta", "Nina", "Olga", "Paula", "Rosa", "Sara", "Tara", "Vera", "Wen", "Yasmin", "Zoe", "Amira",
          "Bianca", "Carmen", "Daphne", "Elif", "Fatima", "Greta", "Helena", "Ingrid", "Joana", "Leonie", "Mira",
          "Noemi", "Rita", "Selin", "Thea", "Aiko", "Signe", "Maeve", "Lorena", "Anouk", "Freya", "Imke"]
MALE = ["Tom", "Ben", "Carlos", "David", "Emil", "Felipe", "George", "Hugo", "Ivan", "Jamal", "Karim", "Leo",
        "Marco", "Nico", "Omar", "Pablo", "Rui", "Samir", "Theo", "Viktor", "Will", "Yusuf", "Andre", "Bruno",
        "Cyril", "Diego", "Erik", "Finn", "Gabriel", "Hassan", "Ian", "Jonas", "Kofi", "Luca", "Mateus", "Noah",
        "Oscar", "Pedro", "Raj", "Stefan", "Tiago", "Anders", "Callum", "Dev", "Elias", "Kenji"]
FIRST_NAMES_SET = frozenset(FEMALE + MALE)
USER_NAMES = ["Maya", "Sam", "Lena", "Arjun", "Ines", "Felix", "Yara", "Marcus", "Noor", "Elena", "Sipho",
              "Oskar", "Amara", "Lucas", "Zeynep", "Ethan", "Nadia", "Rafael", "Mei", "Jonah", "Priya", "Tomasz",
              "Clara", "Idris", "Hannah", "Mateo", "Sofia", "Kwame", "Astrid", "Dario"]

HOME_CITIES = ["Lisbon", "Braga", "Valencia", "Bilbao", "Nantes", "Ghent", "Utrecht", "Leiden", "Hamburg", "Leipzig",
               "Freiburg", "Graz", "Zurich", "Basel", "Turin", "Gdansk", "Brno", "Aarhus", "Gothenburg", "Tampere",
               "Bristol", "Manchester", "Cork", "Toronto", "Ottawa", "Portland", "Austin", "Denver", "Melbourne",
               "Wellington", "Nairobi", "Leeds", "Glasgow", "Rotterdam", "Antwerp", "Malmo", "Oslo", "Helsinki",
               "Munich", "Cologne", "Vilnius", "Riga", "Coimbra", "Dresden"]
CURRENCY = {"Bristol": "pounds", "Manchester": "pounds", "Leeds": "pounds", "Glasgow": "pounds",
            "Toronto": "dollars", "Ottawa": "dollars", "Portland": "dollars", "Austin": "dollars",
            "Denver": "dollars", "Melbourne": "dollars", "Wellington": "dollars", "Zurich": "francs",
            "Basel": "francs", "Aarhus": "kroner", "Gothenburg": "kronor", "Malmo": "kronor", "Oslo": "kroner",
            "Nairobi": "shillings"}

HOMETOWNS = ["Tavira", "Ronda", "Whitby", "Dingle", "Colmar", "Hallstatt", "Sintra", "Obidos", "Hoorn", "Ystad",
             "Kinsale", "Portree", "Tobermory", "Aveiro", "Cuenca", "Annecy", "Lucca", "Ohrid", "Kotor", "Skagen",
             "Visby", "Rye", "Cochem", "Bled", "Piran", "Zadar", "Nafplio", "Alesund"]
HOMETOWN_DETAILS = ["there was one cinema and it closed when I was ten", "everyone knew everyone's business",
                    "we walked to school along the river every morning", "the whole place smelled of the fish market",
                    "the bakery opened at five and we could smell it from our room",
                    "summers were all tourists and winters were completely empty",
                    "my grandparents ran the little shop on the square", "we spent every summer on the same beach"]

def _job(title: str, employers: list[str], confs: list[str], talks: list[str], projects: list[str]) -> dict[str, Any]:
    return {"title": title, "employers": employers, "confs": confs, "talks": talks, "projects": projects}


JOBS = [
    _job("software engineer", ["a small fintech start-up", "a logistics company", "a video game studio"],
         ["the Open Source Summit", "RustFest", "the Cloud Native Forum"],
         ["testing data pipelines", "running small teams on-call", "migrating a monolith without downtime"],
         ["the billing service migration", "the payments API upgrade", "the offline mode for the app", "the checkout rebuild"]),
    _job("data analyst", ["a supermarket chain", "a public transport agency", "an insurance firm"],
         ["DataWeek Europe", "PyData Nordics"], ["forecasting with messy data", "dashboards nobody reads", "testing data pipelines"],
         ["the analytics dashboard", "the data warehouse clean-up", "the customer churn report", "the demand forecast"]),
    _job("product designer", ["a travel booking site", "a health app company", "a music streaming start-up"],
         ["the UX Futures conference", "the Interaction Design Days"],
         ["accessibility in checkout flows", "design systems for small teams", "user research on a budget"],
         ["the search redesign", "the new customer portal", "the onboarding flow", "the settings screen overhaul"]),
    _job("maths teacher", ["a big secondary school", "an international school", "a sixth-form college"],
         ["the National Maths Teaching conference", "EduFutures"],
         ["teaching fractions with games", "mixed-ability classrooms", "maths anxiety in teenagers"],
         ["the new maths curriculum", "the exam timetable", "the maths olympiad club", "the science fair"]),
    _job("primary school teacher", ["a small village school", "a bilingual primary school"], ["the Early Years Summit", "EduFutures"],
         ["outdoor learning in winter", "reading aloud to six-year-olds", "mixed-age classrooms"],
         ["the end-of-year school play", "the reading challenge", "the school garden", "the open evening for new parents"]),
    _job("history lecturer", ["the local university", "a technical college"], ["the History Education Forum", "the Oral History Congress"],
         ["using local archives with students", "teaching contested history", "oral history projects"],
         ["the exchange trip", "the new module on migration", "the archive digitisation", "the exam board review"]),
    _job("nurse", ["the children's hospital", "a busy emergency department", "a community clinic"],
         ["the European Nursing Congress", "the Patient Safety conference"],
         ["reducing medication errors on night shifts", "handover checklists", "burnout in junior staff"],
         ["the new shift rota system", "the hand-hygiene audit", "the ward reorganisation", "the new staff induction pack"]),
    _job("pharmacist", ["a community pharmacy", "the hospital pharmacy"], ["the Clinical Pharmacy Forum", "the Patient Safety conference"],
         ["medication reviews for older patients", "reducing prescribing errors", "antibiotic stewardship"],
         ["the move to electronic records", "the patient leaflet redesign", "the stock system upgrade", "the flu vaccine clinic"]),
    _job("midwife", ["the maternity unit at the general hospital", "a birth centre"],
         ["the Midwifery Research Summit", "the European Nursing Congress"],
         ["continuity of care", "birth plans that actually help", "supporting first-time parents"],
         ["the antenatal class redesign", "the birth centre audit", "the new staff induction pack", "the parent information pack"]),
    _job("accountant", ["a mid-sized audit firm", "a family-owned brewery", "a housing charity"],
         ["the Finance Leaders Forum", "the Charity Finance Summit"],
         ["budgeting for small charities", "automating month-end", "audit trails that auditors like"],
         ["the quarterly budget review", "the annual audit", "the new expenses system", "the pricing review"]),
    _job("marketing manager", ["an outdoor clothing brand", "a regional airline", "a cosmetics company"],
         ["BrandCon", "the Marketing Week expo"], ["brand voice on a tiny budget", "campaigns without influencers", "measuring what matters"],
         ["the spring campaign launch", "the website relaunch", "the loyalty scheme", "the autumn catalogue"]),
    _job("HR officer", ["a hotel chain", "a city council", "an engineering firm"],
         ["the People and Culture Summit", "the Future of Work Forum"],
         ["four-day working weeks", "hiring without CVs", "onboarding remote staff"],
         ["the onboarding programme", "the office move", "the staff survey", "the new leave policy"]),
    _job("architect", ["a practice that designs schools", "a small studio restoring old buildings"],
         ["the Urban Design Biennale", "the Timber Building Forum"],
         ["retrofitting old schools", "daylight in classrooms", "building with reclaimed timber"],
         ["the library extension design", "the school canteen refurbishment", "the planning application for the mill",
          "the community centre drawings"]),
    _job("journalist", ["the regional newspaper", "a radio newsroom", "a science magazine"],
         ["the Investigative Journalism Festival", "the Local News Summit"],
         ["covering local politics", "data journalism on deadline", "fact-checking under pressure"],
         ["the long feature on housing", "the election coverage", "the podcast series on the river", "the special edition on the floods"]),
    _job("translator", ["a publishing house", "a subtitling agency"], ["the Literary Translation Days", "the Translators' Summer School"],
         ["translating humour", "working with living authors", "translating dialect"],
         ["the cookbook translation", "the crime novel translation", "the museum audio guide", "the poetry anthology"]),
    _job("graphic designer", ["a branding agency", "a theatre company"], ["the Type and Print conference", "the Poster Biennale"],
         ["designing for print", "typography on small screens", "posters in the age of phones"],
         ["the rebrand for a coffee chain", "the festival posters", "the museum exhibition catalogue", "the new menu design"]),
    _job("lab technician", ["a vaccine research lab", "a food safety lab"], ["the Lab Automation Forum", "the Food Science Symposium"],
         ["lab waste", "automating sample tracking", "safety culture in small labs"],
         ["the sample database migration", "the lab safety review", "the new freezer inventory", "the accreditation audit"]),
    _job("ecologist", ["a river conservation trust", "a climate research institute"],
         ["the Freshwater Ecology Congress", "the Biodiversity Summit"],
         ["river restoration", "cheap sensors for water quality", "pollinators in cities"],
         ["the grant proposal", "the field study report", "the summer sampling campaign", "the otter survey"]),
]
PARTNER_JOBS = [("a chemistry teacher", "works long days in term time"), ("a paramedic", "does a lot of night shifts"),
                ("a chef", "works most evenings and weekends"), ("a bus driver", "starts really early"),
                ("a civil engineer", "travels to building sites a lot"), ("a vet", "is on call one week a month"),
                ("a solicitor", "rarely gets home before eight"), ("a carpenter", "has a workshop behind the house"),
                ("a museum curator", "works Tuesday to Saturday"), ("a firefighter", "does four-day rotations"),
                ("a sound engineer", "tours with bands in the summer"), ("a baker", "is up at four most days")]
PARTNER_PARAS = ["significant other", "other half"]

# relation: (gender or None, paraphrases)
RELATIONS = {"sister": ("f", ["female sibling"]), "brother": ("m", ["male sibling"]), "mother": ("f", ["mum"]),
             "father": ("m", ["dad"]), "grandmother": ("f", ["gran", "nan"]), "cousin": (None, []),
             "aunt": ("f", []), "uncle": ("m", [])}

HOBBIES = [("climbing", "a chalk bag and a guidebook to the local crags"), ("gardening", "a Japanese pruning saw"),
           ("photography", "a second-hand 50mm lens"), ("jazz records", "a reissue of a Blue Note album on vinyl"),
           ("board games", "a big cooperative board game"), ("baking", "a proper banneton and a bread lame"),
           ("cycling", "a set of bright rechargeable bike lights"), ("yoga", "a cork yoga mat"),
           ("chess", "a wooden travel chess set"), ("fly fishing", "a box of hand-tied flies"),
           ("coffee", "a hand grinder with ceramic burrs"), ("knitting", "merino yarn and bamboo needles"),
           ("hiking", "a lightweight headtorch"), ("astronomy", "a planisphere and a red torch"),
           ("football", "two tickets to a home match"), ("watercolours", "a travel set of watercolour paints"),
           ("tea", "a tasting set of Taiwanese oolongs"), ("woodworking", "a Japanese pull saw"),
           ("crosswords", "a book of cryptic puzzles and a nice pen"), ("wild swimming", "a changing robe")]

PETS = {
    "dog": ["beagle", "greyhound", "border collie", "dachshund", "labrador", "whippet", "spaniel", "corgi",
            "schnauzer", "staffie"],
    "cat": ["ginger tabby", "Maine Coon", "black shorthair", "Siamese", "Bengal", "tortoiseshell"],
    "rabbit": ["lop-eared rabbit", "Netherland dwarf rabbit", "Rex rabbit"],
}
SPECIES_PARA = {"dog": ["canine", "pup"], "cat": ["feline", "kitty"], "rabbit": ["bunny"]}
PET_NAMES = ["Biscuit", "Pepper", "Miso", "Olive", "Juno", "Pickle", "Ziggy", "Mango", "Bramble", "Nacho",
             "Luna", "Tofu", "Waffles", "Pretzel", "Ruby", "Otto", "Clementine", "Bean", "Kiwi", "Maple", "Smudge",
             "Dumpling", "Fig", "Basil", "Noodle", "Toast", "Pesto", "Poppy", "Ludo", "Sushi"]
PET_QUIRKS = ["steals socks from the laundry basket", "howls whenever the doorbell rings",
              "sleeps on the warmest radiator in the flat", "is terrified of the hoover",
              "insists on breakfast at exactly six", "follows me from room to room",
              "refuses to walk in the rain", "greets every delivery driver like an old friend"]
VET_REASONS = ["a limp on the back leg that won't go away", "the yearly vaccinations",
               "an itchy ear that keeps getting worse", "a small lump we noticed last week",
               "a tooth that probably needs to come out", "an upset stomach that has lasted a few days",
               "a torn claw", "a weight check because of the new diet"]

ALLERGENS = [("peanuts", "nuts"), ("shellfish", "shellfish"), ("sesame", "sesame"), ("hazelnuts", "nuts"),
             ("kiwi", "kiwi"), ("mustard", "mustard")]
DIETS = [("vegetarian", {"meat", "fish", "shellfish"}, "no meat or fish in anything please"),
         ("pescatarian", {"meat"}, "fish is fine but no meat"),
         ("vegan", {"meat", "fish", "shellfish", "dairy", "egg"}, "nothing from animals at all"),
         ("omnivore", set(), ""), ("omnivore", set(), ""), ("omnivore", set(), "")]
INSTRUMENTS = ["cello", "piano", "ukulele", "saxophone", "violin", "drums", "classical guitar", "trumpet", "harp",
               "accordion"]
COMMUTES = [("cycle", "kilometres to work each way, rain or shine"), ("walk", "kilometres to the office most days"),
            ("run", "kilometres home from work twice a week")]

# city, the thing the user most wants to do there
DESTINATIONS = [
    ("Kyoto", "see the moss garden at Saiho-ji"), ("Marrakech", "get properly lost in the souks"),
    ("Edinburgh", "climb Arthur's Seat at sunrise"), ("Naples", "eat pizza somewhere without a menu"),
    ("Tbilisi", "try the old sulphur baths"), ("Reykjavik", "see the northern lights at least once"),
    ("Vienna", "sit in an old coffee house for a whole afternoon"), ("Istanbul", "take the ferry across the Bosphorus"),
    ("Oaxaca", "do a mole cooking class"), ("Hanoi", "eat pho from a street stall for breakfast"),
    ("Seville", "see a proper flamenco show"), ("Bergen", "ride the funicular up Mount Floyen"),
    ("Krakow", "walk the old town walls at night"), ("Montreal", "eat bagels from both famous bakeries"),
    ("Lyon", "have a long lunch in a traditional bouchon"), ("Palermo", "wander the street markets"),
    ("Ljubljana", "take a day trip to Lake Bled"), ("Porto", "do a port cellar tour"),
    ("Budapest", "spend a morning in the thermal baths"), ("Copenhagen", "cycle around the harbour"),
    ("Athens", "watch the sunset from Lycabettus Hill"), ("Dubrovnik", "kayak around the city walls"),
    ("Seoul", "hike up to the Bukhansan fortress"), ("Cape Town", "take the cable car up Table Mountain"),
    ("Vancouver", "rent bikes around Stanley Park"), ("Tallinn", "explore the medieval old town"),
    ("Granada", "see the Alhambra early in the morning"), ("Bologna", "take a pasta-making class"),
    ("Galway", "hear live trad music in a pub"), ("Amsterdam", "see the Rijksmuseum properly"),
    ("Valletta", "swim in the Blue Lagoon"), ("Salzburg", "do the salt mine tour"),
    ("Bruges", "take a canal boat ride"), ("Lima", "eat ceviche at a proper cevicheria"),
    ("Hoi An", "get a jacket tailored"), ("Quebec City", "walk the old city ramparts"),
    ("Sarajevo", "eat cevapi in the old bazaar"), ("Bordeaux", "cycle out to the vineyards"),
    ("Trieste", "swim off the rocks at Barcola"), ("Split", "take the boat out to the islands"),
    ("Matera", "stay one night in a cave hotel"), ("San Sebastian", "do a pintxos crawl in the old town"),
]
LODGINGS = ["a small guesthouse called Casa Azul", "an apartment above a bakery near the old harbour",
            "the Hotel Miramar right by the station", "a converted farmhouse just outside town",
            "a tiny studio near the cathedral", "a family-run B&B called The Linden",
            "a boat hostel moored on the canal", "a guesthouse with a rooftop terrace",
            "a loft flat in the old warehouse district", "the Grand Hotel Europa, as a treat",
            "a cabin in the hills about twenty minutes out", "a room in a restored convent",
            "a cheap but spotless hostel near the market", "an Airbnb in a quiet residential street",
            "a boutique hotel called The Copper Kettle", "a little cottage with a wood stove",
            "a serviced apartment near the main square", "a pension run by an elderly couple"]

COMPANIES = ["a big consultancy", "a competitor across town", "a start-up that folded", "the civil service",
             "a hospital in Dublin", "a university in Leuven", "a charity", "a bank", "an agency in Berlin"]
SLIP_REASONS = ["the supplier is late", "half the team had flu", "the client changed the brief",
                "legal still hasn't signed off", "the budget was frozen for a month", "we found a nasty data issue"]

# name, tags (what a diet or an allergy rules out)
DISHES = [("a mushroom risotto", set()), ("slow-cooked lamb with apricots", {"meat"}),
          ("a big pot of dal with flatbreads", set()), ("chicken tagine with preserved lemon", {"meat"}),
          ("a spinach and feta pie", {"dairy", "egg"}), ("pork belly bao buns", {"meat"}),
          ("a Thai green curry with tofu", set()), ("shakshuka with lots of herbs", {"egg"}),
          ("beef bourguignon", {"meat"}), ("homemade gnocchi with sage butter", {"dairy"}),
          ("a whole roast sea bream", {"fish"}), ("a vegetable lasagne", {"dairy"}),
          ("fish tacos with pickled onions", {"fish"}), ("mapo tofu", set()), ("a Moroccan harira soup", set()),
          ("a seafood paella", {"shellfish", "fish"}), ("aubergine parmigiana", {"dairy"}),
          ("a pumpkin and sage soup", set()), ("chicken katsu curry", {"meat", "egg"}),
          ("stuffed peppers with rice and feta", {"dairy"}), ("a Sri Lankan jackfruit curry", set()),
          ("prawn linguine", {"shellfish"}), ("a Sunday roast chicken", {"meat"}),
          ("black bean chilli", set()), ("salmon with a miso glaze", {"fish", "sesame"}),
          ("a lentil shepherd's pie", set()), ("satay noodles", {"nuts"}), ("a leek and potato gratin", {"dairy"}),
          ("Korean bibimbap", {"egg", "sesame"}), ("a chickpea and spinach stew", set()),
          ("mushroom and chestnut wellington", set()), ("pierogi with potato and onion", {"dairy"}),
          ("a Georgian bean stew", set()), ("pesto pasta with green beans", {"nuts", "dairy"})]

BOOKS = [("The Overstory", "Richard Powers"), ("Piranesi", "Susanna Clarke"), ("Middlemarch", "George Eliot"),
         ("Klara and the Sun", "Kazuo Ishiguro"), ("The Remains of the Day", "Kazuo Ishiguro"),
         ("Pachinko", "Min Jin Lee"), ("Homegoing", "Yaa Gyasi"), ("Station Eleven", "Emily St. John Mandel"),
         ("The Left Hand of Darkness", "Ursula K. Le Guin"), ("Circe", "Madeline Miller"),
         ("A Gentleman in Moscow", "Amor Towles"), ("The Secret History", "Donna Tartt"),
         ("Braiding Sweetgrass", "Robin Wall Kimmerer"), ("Sapiens", "Yuval Noah Harari"),
         ("The Name of the Rose", "Umberto Eco"), ("Never Let Me Go", "Kazuo Ishiguro"),
         ("Wolf Hall", "Hilary Mantel"), ("Lincoln in the Bardo", "George Saunders"),
         ("The Dispossessed", "Ursula K. Le Guin"), ("Anna Karenina", "Leo Tolstoy"),
         ("Hamnet", "Maggie O'Farrell"), ("Educated", "Tara Westover"), ("The Vegetarian", "Han Kang"),
         ("Project Hail Mary", "Andy Weir"), ("Normal People", "Sally Rooney"), ("Beloved", "Toni Morrison"),
         ("The Shadow of the Wind", "Carlos Ruiz Zafon"), ("Tomorrow, and Tomorrow, and Tomorrow", "Gabrielle Zevin"),
         ("The Master and Margarita", "Mikhail Bulgakov"), ("Small Things Like These", "Claire Keegan"),
         ("The Book Thief", "Markus Zusak"), ("Cloud Cuckoo Land", "Anthony Doerr"), ("Stoner", "John Williams"),
         ("Persepolis", "Marjane Satrapi"), ("The Road", "Cormac McCarthy"), ("Shuggie Bain", "Douglas Stuart")]
READ_OPINIONS = ["the first chapters were slow but it has really picked up", "I love the writing style",
                 "it's beautifully written but quite heavy going", "I keep staying up far too late with it",
                 "I'm honestly not sure it's for me yet", "it's much funnier than I expected",
                 "I keep underlining whole paragraphs", "the ending of each chapter is a cliffhanger",
                 "it's making my commute fly by", "I'm reading it slowly so it doesn't end"]
FILMS = ["Past Lives", "Perfect Days", "Aftersun", "The Zone of Interest", "Anatomy of a Fall", "Drive My Car",
         "Paddington 2", "Portrait of a Lady on Fire", "The Holdovers", "Spirited Away", "Parasite", "Roma",
         "The Grand Budapest Hotel", "Arrival", "Moonlight", "Amelie", "Howl's Moving Castle", "Lady Bird",
         "The Banshees of Inisherin", "Everything Everywhere All at Once", "Fallen Leaves", "Shoplifters",
         "The Lives of Others", "Call Me by Your Name", "Dune", "Little Women", "Paterson", "Columbus"]
FILM_OPINIONS = ["I cried at the ending, which I did not expect", "it was gorgeous but about thirty minutes too long",
                 "we argued about the ending all the way home", "honestly I fell asleep halfway through",
                 "the soundtrack has been stuck in my head ever since", "it's the best thing I've seen this year",
                 "the first half was brilliant and then it lost me", "I want to watch it again straight away"]

# name, cuisine, the dish the user loved there, tags
RESTAURANTS = [
    ("Zaatar", "Lebanese", "charred cauliflower with tahini", set()),
    ("Osteria Nove", "Italian", "pici with wild boar ragu", {"meat"}), ("Koji", "Japanese", "miso black cod", {"fish"}),
    ("Brasa", "Portuguese grill", "piri-piri chicken", {"meat"}), ("Little Hanoi", "Vietnamese", "crispy rice pancake", set()),
    ("Mesa Verde", "Mexican", "pork pibil tacos", {"meat"}), ("The Olive Press", "Greek", "lamb kleftiko", {"meat"}),
    ("Tandoor House", "North Indian", "black dal", set()), ("Sakura Tei", "Japanese", "tonkotsu ramen", {"meat"}),
    ("Bistro Margaux", "French", "duck confit", {"meat"}), ("Saffron Table", "Persian", "jewelled rice with barberries", set()),
    ("Kaya", "Korean", "kimchi pancake", set()), ("Anatolia", "Turkish", "lahmacun", {"meat"}),
    ("La Parrilla", "Argentinian", "skirt steak with chimichurri", {"meat"}),
    ("Blue Nile", "Ethiopian", "lentil stew on injera", set()), ("Nonna Rosa", "Italian", "burrata with roasted peppers", set()),
    ("Tbilisi Kitchen", "Georgian", "cheese-filled khachapuri", set()), ("The Fig Tree", "Mediterranean", "grilled halloumi with fig jam", set()),
    ("Casa Oaxaca", "Mexican", "mole negro", {"meat"}), ("Baan Suan", "Thai", "green papaya salad", set()),
    ("Nordic Table", "Scandinavian", "cured trout with rye crumbs", {"fish"}),
    ("Bodega Sol", "Spanish tapas", "patatas bravas", set()), ("Dim Sum Palace", "Cantonese", "prawn dumplings", {"shellfish"}),
    ("Lotus Leaf", "vegetarian Chinese", "salt and pepper tofu", set()), ("Marrow", "modern British", "beetroot tartare", set()),
    ("Chez Lucien", "French", "steak frites", {"meat"}), ("Sahara", "Moroccan", "seven-vegetable couscous", set()),
    ("Ostra", "seafood", "grilled octopus", {"fish"}), ("Pho 88", "Vietnamese", "beef pho", {"meat"}),
    ("Sumac", "Middle Eastern", "smoky aubergine dip", set()), ("Green Room", "vegan", "jackfruit tacos", set()),
    ("Dosa Corner", "South Indian", "masala dosa", set()), ("Il Forno", "Neapolitan pizza", "pizza with wild mushrooms", set()),
]
STREETS = ["Market Street", "the harbour front", "Canal Street", "Depot Square", "Station Road", "Church Lane",
           "the riverside", "King Street", "Mill Lane", "the main square", "Elm Street", "University Avenue",
           "Bridge Street", "Fish Market Lane", "Garden Row"]
OCCASIONS = [("our anniversary", "to mark another year together", True),
             ("my birthday", "when I turned a year older", False),
             ("my promotion", "to celebrate moving up a rung at the office", False),
             ("a friend's leaving do", "to send off a pal who is moving abroad", False),
             ("the end of a very long project", "when a huge piece of work finally wrapped", False),
             ("my mum's retirement", "when my mother stopped working", False),
             ("a reunion with old university friends", "to catch up with people I studied alongside", False),
             ("my parents' fortieth wedding anniversary", "when mum and dad marked four decades married", False)]

WEEKEND_ACTS = ["go kayaking on the river", "hike up to the old fire lookout", "visit the big flea market across town",
                "take the train to the coast for a swim", "do a pottery workshop", "try the new bouldering gym",
                "spend a day at the botanical gardens", "go apple picking at a farm outside town",
                "host a board game night", "cycle the old railway path", "see an outdoor jazz concert in the park",
                "go to the food truck festival", "camp by the lake for one night", "help a friend move flats",
                "paint the garden fence", "go strawberry picking", "walk the river path to the next village for lunch",
                "explore the castle ruins", "go to a wine tasting", "see a friend's band play", "do a sourdough workshop",
                "take the ferry to the island", "go to the vintage car show", "have a lazy day and a barbecue",
                "go to the planetarium", "do a charity litter pick on the beach", "try paddleboarding at the lake",
                "go to the open day at the observatory"]

APPOINTMENTS = {
    "dentist": ("dentist appointment", "dentist", ["because a filling keeps aching", "for the usual check and clean"],
                ["When am I getting my teeth looked at?", "When is my next visit about my teeth?"]),
    "physio": ("physio session for my shoulder", "physio", ["because it still twinges when I lift anything",
                                                           "to go through new stretches"],
               ["When is my next rehab visit?", "When do I next see the therapist treating my injury?"]),
    "dermatologist": ("dermatologist appointment", "dermatologist", ["to look at a mole on my back",
                                                                    "about the rash on my hands"],
                      ["When is the skin specialist seeing me?", "On what day does a skin specialist see me?"]),
    "optician": ("eye test at the optician's", "eye test", ["because reading has got harder",
                                                           "since my glasses are two years old"],
                 ["When is my vision check?", "When do I get my sight checked?"]),
    "gp": ("check-up with my GP", "GP check-up", ["just a routine one", "about the headaches I keep getting"],
           ["When do I see my family doctor?", "When is my family doctor visit?"]),
    "blood": ("blood test at the clinic", "blood test", ["to check my iron levels", "as part of a yearly screening"],
              ["When is my lab work booked?", "When do they take a sample for lab work?"]),
    "hearing": ("hearing test at the audiologist", "hearing test", ["because my left ear has been muffled",
                                                                   "since the ringing started"],
                ["When are my ears being checked?", "When is my ear examination?"]),
}
APPOINTMENT_LABELS = {"dentist": "the dentist appointment", "physio": "the physio session",
                      "dermatologist": "the dermatologist appointment", "optician": "the eye test", "gp": "the GP check-up",
                      "blood": "the blood test", "hearing": "the hearing test"}
BODYPARTS = ["left knee", "right ankle", "lower back", "right shoulder", "left hip", "right calf"]
INJURY_CAUSES = ["the hike on Sunday", "moving the sofa", "a badly timed sprint for the bus", "a spin class",
                 "slipping on the stairs", "carrying the shopping up four floors"]
RACES = ["the Riverside 10k", "the Harbour Half Marathon", "the Spring Trail 15k", "the Midnight 5k",
         "the Castle to Coast half marathon", "the Lakeside 10k", "the Hill Dash 8k", "the City Bridges 10 miler",
         "the Forest Trail 12k", "the Seafront 5k"]
LANGUAGES = [("Portuguese", "the personal infinitive"), ("Japanese", "keigo, the polite forms"),
             ("Italian", "the subjunctive"), ("German", "the dative case"), ("Korean", "honorific verb endings"),
             ("Spanish", "ser versus estar"), ("Greek", "the aorist"), ("Turkish", "vowel harmony"),
             ("Dutch", "separable verbs"), ("Arabic", "the broken plurals"), ("Mandarin", "measure words"),
             ("Swedish", "the pitch accent")]
BUDGET_GOALS = [("a new car", "a vehicle"), ("a deposit on a flat", "buying a home"), ("a trip to Japan", None),
                ("an emergency fund", "a rainy-day cushion"), ("a new laptop", "a computer"),
                ("our wedding", "getting married"), ("a sabbatical next year", "a long break from work")]
ROOMS = [("spare bedroom", "sage green"), ("kitchen", "warm terracotta"), ("hallway", "pale grey"),
         ("living room", "deep navy"), ("bathroom", "soft peach"), ("home office", "olive")]

# --------------------------------------------------------------------------------------------------
# Filler: topical exchanges that carry no question-relevant fact. Each entry is (user variants,
# assistant variants); slots are only ones that never answer a question.

FILLER: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "travel": [
        (("Do I need a plug adapter there, or do most places have USB ports now?",
          "Remind me, is it worth packing a plug adapter or are USB sockets everywhere these days?"),
         ("Bring one adapter anyway; sockets are often hidden behind the bed, and a small multi-port charger saves a lot of juggling.",
          "I'd pack one. A compact adapter plus a charger with two or three USB ports covers phones, watch and camera.")),
        (("What's the weather usually like there at that time of year?",
          "Should I expect rain? I have no idea what the weather does there then."),
         ("It can swing quite a bit, so layers are the safe bet: a light jacket, one warm jumper and shoes you don't mind getting wet.",
          "Plan for a mix: mild afternoons, cool evenings and the odd shower. A packable rain jacket is worth the space.")),
        (("Is travel insurance worth it for a short trip like this, or is it overkill?",
          "Do people actually bother with travel insurance for a few days away?"),
         ("For a few days it's cheap and mostly covers cancellations, which is the real risk. Check whether your bank card already includes some cover.",
          "It's usually worth it, mainly for cancellations and lost bags. Some credit cards include basic cover, so look there first.")),
        (("Can you suggest a rough plan for the first day so we don't waste the morning?",
          "We always lose the first day to faffing. Any advice on how to start?"),
         ("Start with a slow breakfast near where you're staying, walk the old centre before it gets busy, and keep the afternoon loose.",
          "Keep day one light: drop the bags, take a long walk to get your bearings and book only dinner. Jet-lagged plans rarely survive.")),
        (("I always overpack. What's a realistic list for carry-on only?",
          "Help me be strict with packing, I want to get away with hand luggage only."),
         ("Three tops, two bottoms, one warm layer, one spare pair of shoes at most and a small toiletry bag; wear the bulkiest things on the plane.",
          "Roll rather than fold, pick one colour palette so everything matches, and decant toiletries into small bottles. Laundry halfway is fine.")),
        (("Is it worth buying a public transport pass, or should we just walk everywhere?",
          "Do you think a travel card pays off, or is walking enough?"),
         ("If you'll take more than three rides a day a pass usually pays off; otherwise contactless tickets are simpler and walking is nicer.",
          "Walk the centre and buy single tickets for longer hops. A pass only wins if you plan day trips on local trains.")),
        (("Any tips for not looking like a complete tourist?",
          "How do we avoid the tourist traps when we eat out?"),
         ("Learn a few greetings, eat lunch where office workers go, and skip restaurants with photos of every dish outside.",
          "Walk two streets away from the main sights before choosing somewhere to eat, and look for short handwritten menus.")),
        (("How early should we get to the airport for a morning flight?",
          "What's a sensible buffer at the airport these days?"),
         ("Two hours is comfortable for a European flight with checked bags; with hand luggage and online check-in, ninety minutes is usually fine.",
          "For short-haul with only cabin bags, about ninety minutes; add half an hour if you're checking a bag or it's a holiday weekend.")),
        (("Remind me to download offline maps before we leave, roaming data is terrible.",
          "I need to sort out maps, my phone plan charges a fortune abroad."),
         ("Good call. Download the whole city area and the route from the airport, and pin your accommodation address.",
          "Offline maps plus a screenshot of each booking confirmation will cover you. A local eSIM is cheap if you need data.")),
        (("I'd like to bring back something small for my colleagues. Ideas?",
          "What souvenirs actually get eaten rather than sitting in a drawer?"),
         ("Local sweets or a good tin of tea travel well and are easy to share; avoid anything that needs a fridge or might leak.",
          "Edible gifts win every time: biscuits, chocolate or spice mixes from a market stall. Small, light and gone within a day.")),
        (("We keep arguing about whether to rent a car. Thoughts?",
          "Is a hire car a good idea or just a parking nightmare?"),
         ("In the city a car is mostly a parking headache. Rent one only for the days you head out of town.",
          "Skip it for the city days and hire one for a single day trip; you'll save money and a lot of stress.")),
        (("I never know the tipping rules abroad. Any general advice?",
          "Is it rude not to tip? I always get this wrong."),
         ("Customs vary, so a quick check helps; rounding up or leaving five to ten percent for good table service is rarely wrong in Europe.",
          "In most of Europe service is modest and rounding up is normal. Elsewhere it differs a lot, so it's worth looking up.")),
        (("I just realised my passport expires next year. Is that a problem?",
          "How much validity does a passport need left for travelling?"),
         ("Some countries want three to six months of validity left on arrival, so check the entry rules now rather than at the gate.",
          "It depends on the destination; many require at least three months beyond your return date. Renewing early avoids a scramble.")),
        (("What's a fair way to split costs when travelling with someone?",
          "How do people share expenses on a trip without it getting awkward?"),
         ("A shared expenses app works well: log everything as you go and settle once at the end instead of swapping cash after every coffee.",
          "Agree a rough daily budget first, keep a shared list of spending and settle up on the last evening.")),
    ],
    "talk": [
        (("How many slides is too many for a twenty-five minute slot?",
          "I tend to make far too many slides. What's a sensible number?"),
         ("Roughly one slide a minute is a good ceiling; fewer is fine if each one carries a single clear idea.",
          "Aim for fifteen to twenty strong slides and cut anything you'd only read aloud.")),
        (("I get really nervous before talks. Any tricks that actually work?",
          "My hands shake every time I present. How do people cope?"),
         ("Rehearse the first two minutes until they're automatic; once you're past the opening, nerves usually settle.",
          "Slow breathing just before you go on helps, and so does having a friendly face to look at in the audience.")),
        (("Should I rehearse in front of my team or is that awkward?",
          "Is a dry run with colleagues worth the embarrassment?"),
         ("Do it. Colleagues spot jargon and gaps you can't see, and one rehearsal with an audience is worth five alone.",
          "A dry run is the single best thing you can do. Ask them for one thing to cut and one thing to explain better.")),
        (("How do I handle a question I can't answer during the Q&A?",
          "What do I say if someone asks something I don't know?"),
         ("Say it's a good question, admit you don't know offhand, and offer to follow up afterwards. Audiences respect that.",
          "Be honest, repeat the question so everyone hears it, and either turn it back to the room or promise a follow-up.")),
        (("The organisers of {conf} want my slides two weeks early. Is that normal?",
          "Do I really have to send the {conf} people my slides this early?"),
         ("Quite normal for bigger events; they check formats and accessibility. You can usually send small updates later.",
          "Yes, many conferences ask early so they can load everything onto one machine. Ask whether a later swap is allowed.")),
        (("Can you help me write a punchier opening line for the talk?",
          "My intro is boring. How should I open?"),
         ("Open with a concrete story or a surprising number from your own work, then say what the audience will take away.",
          "Try starting with a question the audience will recognise from their own jobs, then answer it over the talk.")),
        (("Should I put my speaker notes on the slides or keep them separate?",
          "Is presenter view reliable, or should I print notes?"),
         ("Keep notes separate and short, a few bullet words per slide. Printed cards are a good backup if presenter view fails.",
          "Presenter view is usually fine, but bring a printed one-page outline in case the setup is different.")),
        (("What's a good way to end a talk so it doesn't just fizzle out?",
          "My talk endings are always weak. Any advice on that?"),
         ("Finish with the one idea you want people to remember and a clear next step, then say thank you and stop.",
          "Recap three points in one sentence each and end on a practical suggestion. Avoid ending on a questions slide.")),
    ],
    "cooking": [
        (("How long can cooked rice safely stay in the fridge?",
          "Is day-old rice actually safe to reheat, or is that a myth?"),
         ("About a day, two at most, and cool it quickly after cooking. Reheat it until it's steaming hot all the way through.",
          "Cool it fast, fridge it within an hour and eat it within a day. Reheat it only once and make sure it's piping hot.")),
        (("I never know how much salt to put in pasta water.",
          "How salty should pasta water really be, in your opinion?"),
         ("Roughly a tablespoon for a big pot; it should taste pleasantly seasoned, not like the sea.",
          "Season it until it tastes like a well-salted soup. Then go easy on salt in the sauce.")),
        (("Can I prep anything the night before so I'm not stuck in the kitchen all evening?",
          "What can I do ahead so I actually get to sit down with everyone?"),
         ("Chop the vegetables, make any sauce or dressing and set the table ahead; most braises taste even better the next day.",
          "Anything stewed or braised can be made a day early. Prep garnishes in little bowls so the last step is just assembling.")),
        (("What's a simple dessert that doesn't need an oven?",
          "Any easy puddings I can make without baking?"),
         ("A lemon posset takes ten minutes of cooking and sets in the fridge; serve it with a few berries and a crisp biscuit.",
          "Try a chocolate mousse or a fruit fool; both come together in minutes and chill while you eat the main.")),
        (("My knives are terrible. Is a whetstone worth learning?",
          "Should I get my knives sharpened or learn to do it myself?"),
         ("It is, and it's less fiddly than it looks: keep a steady angle, use light pressure, and do a few passes on each side.",
          "A whetstone is worth it if you cook a lot. Otherwise many hardware shops sharpen knives cheaply while you wait.")),
        (("Do you have a trick for peeling garlic faster?",
          "Peeling garlic takes me forever. Do you have any tips?"),
         ("Crush each clove lightly with the flat of a knife and the skin slips off; for a lot of garlic, shake the cloves in a closed jar.",
          "Trim the root end and press with the side of your knife. For a whole bulb, shaking it hard in a lidded bowl works surprisingly well.")),
        (("What wine would go with something fairly rich and savoury?",
          "Any idea what to drink with a hearty main course?"),
         ("A medium-bodied red with some acidity, like a Rioja crianza, works with most rich dishes without overpowering them.",
          "Something with fresh acidity cuts through richness; a Beaujolais or a dry rosé are both crowd-pleasers.")),
        (("How do I stop the bottom of the pan from burning when I cook for a crowd?",
          "Big pots always catch on the bottom for me. What am I doing wrong?"),
         ("Use a heavy pot, keep the heat lower than you think and stir from the bottom; adding liquid gradually also helps.",
          "Thin pans are usually the culprit. A heavy casserole on low heat, or finishing it in the oven, avoids scorching.")),
        (("Is it okay to freeze leftovers that already have cream in them?",
          "Can creamy sauces go in the freezer, or do they split?"),
         ("They freeze fine but may split a little when reheated; warm them gently and whisk, or add a splash of fresh cream at the end.",
          "Yes, though the texture can turn grainy. Reheat slowly and stir well, and it will mostly come back together.")),
        (("I want to try making bread this month. Where should I start?",
          "Is homemade bread realistic for a total beginner?"),
         ("A simple no-knead loaf is a forgiving first step: flour, water, salt and yeast, a long rest overnight and a hot pot to bake it in.",
          "Very realistic. Start with a basic yeasted loaf before sourdough, and weigh everything instead of using cups.")),
        (("What herbs are worth growing on a windowsill?",
          "I'd like fresh herbs at home. Which ones survive indoors?"),
         ("Basil, chives and parsley are easy and useful; mint grows well too but keep it in its own pot because it takes over.",
          "Chives, thyme and parsley are hardy indoors. Basil needs the sunniest spot you have and regular pinching.")),
        (("How far ahead should I start cooking so everything is ready at the same time?",
          "Timing is my weak point. How do I get everything on the table together?"),
         ("Work backwards from when you want to eat: note each dish's time, start the longest first and leave fifteen minutes of slack.",
          "Write a quick timeline on paper, counting back from serving time. Sides that hold well can be done first and kept warm.")),
        (("Do you think I need a bigger pot, or can I just cook in two batches?",
          "My biggest pan is tiny. Should I split things into batches?"),
         ("Batches are fine, especially for browning; crowding the pan makes things steam instead of colour.",
          "Two batches is better than one overcrowded pan. Combine everything at the end to finish cooking together.")),
    ],
    "dining": [
        (("Is it weird to ask a restaurant for a recipe?",
          "Would a chef be offended if I asked how they made something?"),
         ("Not at all, many chefs are flattered; the worst case is a polite no. Asking which spices they use is a gentler start.",
          "Most kitchens take it as a compliment. Ask your server and you might get a few tips, if not the full recipe.")),
        (("How much should I tip for a big group dinner?",
          "Tipping for groups confuses me. Any rule of thumb?"),
         ("Check whether service is already added for groups; if not, around ten to fifteen percent for good service is typical.",
          "Many places add a service charge for six or more, so look at the bill before adding anything extra.")),
        (("Do you think booking a week ahead is enough for a popular place?",
          "How far ahead do people book the busy restaurants?"),
         ("For the busiest places two or three weeks is safer, but calling on the day for cancellations often works.",
          "A week is often fine midweek; Fridays and Saturdays fill up much earlier. Bar seats are worth asking about.")),
        (("Is a tasting menu worth it, or is it just expensive?",
          "Tasting menus: are they a special treat or just overpriced?"),
         ("For a special occasion it can be great fun, as long as you're happy to give up choosing. Lunch versions are often cheaper.",
          "They're worth it when the kitchen is confident and creative; check reviews first and go hungry.")),
        (("I want to write a nice review for the place, any tips?",
          "How do I write a review that's actually useful to people?"),
         ("Mention specific dishes, the service and the atmosphere, and say who the place suits, like families or a quiet date.",
          "Be concrete: what you ordered, what stood out, rough price per person and whether you'd go back.")),
        (("How do I politely send a dish back without making it awkward?",
          "What's the polite way to complain about food?"),
         ("Tell the server calmly and specifically what's wrong and what you'd like instead; good places fix it without fuss.",
          "Keep it simple and early: a quick word that it's cold or not what you ordered, and a suggestion for a fix.")),
        (("Can you recommend something for people who don't drink alcohol?",
          "Any good non-alcoholic drinks to order with dinner?"),
         ("Many places now do house sodas or alcohol-free pairings; a good ginger beer or kombucha goes with almost anything.",
          "Ask whether they make their own lemonade or have alcohol-free wine; both are much better than they used to be.")),
        (("We always end up at the same few places. How do I find new ones?",
          "How do you discover good restaurants in your own city?"),
         ("Follow a couple of local food writers, try the lunch menus of places you're curious about, and ask your favourite waiters where they eat.",
          "Pick one neighbourhood a month and try somewhere new there. Local food newsletters are often better than review sites.")),
    ],
    "pet": [
        (("How often should nails be trimmed? I always put it off.",
          "Nail trimming is a battle every time. How often is it really needed?"),
         ("Every three to four weeks for most pets; if you hear clicking on hard floors, it's overdue. Short, frequent trims are easier.",
          "Little and often works best. Do one paw at a time with plenty of treats so it becomes routine.")),
        (("What's a good way to keep a pet busy while I'm at work?",
          "Any ideas for keeping an animal entertained when the house is empty?"),
         ("Puzzle feeders and a few rotating toys help a lot; leaving a radio on low can make the house feel less empty.",
          "Food puzzles, a window perch or a safe chew, and a longer walk or play session before you leave all help.")),
        (("Is it worth getting pet insurance, or should I just save the money?",
          "Pet insurance: sensible or a waste of money?"),
         ("It depends on your savings; one surgery can cost thousands, so insurance is a safety net if that would hurt.",
          "If an unexpected big vet bill would be hard to cover, insurance is worth it. Check the exclusions carefully.")),
        (("How do I get a pet used to travelling in the car?",
          "Car journeys are stressful for our animals. How do we fix that?"),
         ("Start with very short trips that end somewhere nice, use a secure carrier or harness and keep the car cool and quiet.",
          "Build it up slowly: sit in the parked car first, then tiny drives, always with treats and calm praise.")),
        (("What human foods are actually dangerous for pets?",
          "I worry about guests feeding scraps. What's off limits?"),
         ("Chocolate, grapes, raisins, onions, garlic and anything with xylitol are the big ones; cooked bones are risky too.",
          "Keep chocolate, onions, grapes and sugar-free sweets well away. A note for guests saying no scraps is reasonable.")),
        (("How much exercise is enough for a young, energetic animal?",
          "I feel like we never do enough exercise. How much is normal?"),
         ("It depends on breed and age, but mental work tires them as much as walking; short training games count.",
          "Quality matters as much as quantity: sniffing, games and training sessions burn a lot of energy.")),
        (("Do you think we need a professional groomer or can I do it at home?",
          "Home grooming versus a groomer, what do you think?"),
         ("Brushing and baths at home are fine for most coats; a groomer is worth it for tricky coats or nail trims.",
          "Regular brushing at home plus a professional tidy every couple of months is a good balance.")),
        (("Any tips for introducing a pet to a new neighbour's animal?",
          "How should two animals meet for the first time?"),
         ("Go slowly: neutral ground, short sessions and plenty of space to retreat. Reward calm behaviour.",
          "Keep the first meeting brief and calm, ideally somewhere neither of them sees as home territory.")),
        (("How do I find a good pet sitter I can trust?",
          "We need someone to look after the animals for a few days. Where do people find sitters?"),
         ("Ask your vet or neighbours for recommendations and do a paid trial visit before you go away.",
          "Personal recommendations are best. Meet them at home first and leave clear written notes and the vet's number.")),
    ],
    "move": [
        (("How many boxes do people usually need for a two-bedroom flat?",
          "I have no idea how many boxes to buy. Any estimate?"),
         ("Roughly forty to sixty for a two-bedroom place, plus a few wardrobe boxes; books need small boxes so they stay liftable.",
          "Around fifty is a good start. Supermarkets and local groups often give boxes away for free.")),
        (("Should I hire movers or just rent a van and ask friends?",
          "Movers or a van and some bribed friends?"),
         ("If there are stairs or heavy furniture, movers are worth it; for a small flat a van and pizza for friends works.",
          "Get two quotes first. Professional movers cost more but come insured and finish in half the time.")),
        (("Who do I need to tell about my change of address?",
          "Can you help me list everyone who needs my new address?"),
         ("Bank, employer, doctor, dentist, insurance, tax office and any subscriptions; a mail redirect covers the gaps.",
          "Start with the bank, payroll, your GP, insurers and the electoral roll, then go through your email for subscriptions.")),
        (("How early should I book the internet installation?",
          "Getting broadband set up always takes ages. When should I order it?"),
         ("As soon as you have the new address and a move-in date; installation slots are often two or three weeks out.",
          "Order it now. If there's a gap, a mobile hotspot can cover the first week.")),
        (("What should go in a first-night box for moving day?",
          "I always forget essentials on moving day. What should I keep separate?"),
         ("Kettle, mugs, tea or coffee, toilet roll, phone chargers, bedding, a towel, basic tools and a few snacks.",
          "Pack one box with bedding, chargers, toiletries, medication, a kettle and snacks, and keep it in the car.")),
        (("How do I pack plates so they don't break?",
          "Are there any tricks for packing glasses and plates safely?"),
         ("Stand plates on their edge like records, wrap each one and fill the gaps with towels or paper.",
          "Wrap each piece separately, pack plates vertically and label the box fragile on every side.")),
        (("I'm dreading the deep clean of the old place. Where do I start?",
          "We want our deposit back. What do landlords usually check?"),
         ("Oven, fridge, bathroom limescale and marks on walls are the usual suspects; start with the oven because it takes longest.",
          "Take photos before you start, then tackle the kitchen and bathroom first. Those are where deductions usually come from.")),
        (("Should we get rid of furniture before the move or after?",
          "Is it better to declutter now or once we're in?"),
         ("Before, definitely; every item you sell or donate now is one you don't pay to move.",
          "Now is better. Measure the new rooms and only move furniture you know will fit.")),
    ],
    "health": [
        (("Should I write down my questions before the appointment?",
          "I always forget what I wanted to ask once I'm in the room."),
         ("Yes, a short list on your phone helps a lot, with the most important question first in case time is short.",
          "Write your top three questions down and bring any medication names. It's normal to read from notes.")),
        (("Is it normal to feel anxious before a check-up?",
          "I get weirdly nervous before any medical appointment."),
         ("Very normal. Arriving early, breathing slowly and telling the clinician you're nervous all make it easier.",
          "Lots of people feel that way. It can help to bring a book or podcast for the waiting room.")),
        (("Can I eat beforehand, or do I need to fast?",
          "Do you know if I'm supposed to skip breakfast before it?"),
         ("It depends on the test; the clinic's letter should say. When in doubt, call and ask rather than guess.",
          "Some tests need fasting and most don't. Check the instructions or ring the reception to be sure.")),
        (("How do I ask for a sick note without feeling awkward?",
          "My manager wants a sick note. How does that usually work?"),
         ("Just ask directly at the end of the appointment; clinicians do it all the time and it's a routine request.",
          "Mention it when you book or at the start of the appointment so it's not a rush at the end.")),
        (("Any tips for remembering to take tablets every day?",
          "I keep forgetting to take my medication. What helps?"),
         ("Tie it to a daily habit like brushing your teeth, and use a weekly pill box so you can see if you missed one.",
          "A phone alarm plus a pill organiser works for most people. Keep them somewhere you'll see each morning.")),
        (("Should I take the morning off for it or try to squeeze it into lunch?",
          "Is it realistic to fit an appointment into a lunch break?"),
         ("Clinics often run late, so I'd take at least a couple of hours rather than racing back.",
          "If it's close to work a lunch break can work, but block extra time in your calendar just in case.")),
    ],
    "books": [
        (("Do you think it's fine to give up on a book halfway?",
          "I feel guilty abandoning books. Is that silly?"),
         ("Completely fine. Life is short and there are too many good books; you can always come back later.",
          "Not silly, but unnecessary. Many keen readers follow a fifty-page rule and move on without regret.")),
        (("E-reader or paper books, what's your take on it?",
          "I keep going back and forth between my Kindle and paperbacks."),
         ("E-readers are great for travel and reading in bed; paper is nicer for books you want to flip back through.",
          "Use both: an e-reader for commutes and holidays, and paper for books you'll lend or reread.")),
        (("Our book club always ends up talking about everything except the book.",
          "How do I get the book club to actually discuss the book?"),
         ("Bring two or three open questions, like which character changed most, and start with them before the wine.",
          "Try having one person pick a passage to read aloud; it anchors the discussion in the text.")),
        (("I want to read more but I'm always too tired in the evenings.",
          "How do people find time to read with a full-time job?"),
         ("Try ten pages in the morning or on the commute; small, regular sessions add up faster than you'd think.",
          "Audiobooks on walks or chores count too. And keeping a book on your pillow is an oddly effective nudge.")),
        (("Can you recommend something light for after this one?",
          "I'll need something easier to read next, any suggestions?"),
         ("A short, funny novel or a good essay collection makes a nice palate cleanser after something dense.",
          "Maybe a cosy mystery or a travel memoir; something you can read in a couple of sittings.")),
        (("Do you keep track of what you read? I keep forgetting titles.",
          "I should start a reading log. Is that nerdy?"),
         ("Not nerdy at all; a simple note with the title, a date and one line of thoughts is plenty.",
          "A reading log is lovely to look back on. A small notebook or an app both work.")),
    ],
    "films": [
        (("Is it worth going to the cinema anymore or should we just stream?",
          "Cinema or sofa, what's your take these days?"),
         ("For big visual films or comedies with a crowd the cinema still wins; quieter dramas are fine at home.",
          "Go to the cinema for the spectacle and the shared reactions; stream the rest.")),
        (("Can you suggest a film we'd both like? We have very different tastes.",
          "Help us pick a film, we never agree on anything."),
         ("Try a well-reviewed comedy-drama; they tend to bridge different tastes. Or take turns choosing each week.",
          "A good heist film or an animated feature often pleases everyone. Each person can veto one option.")),
        (("Subtitles or dubbing, which do you think is better?",
          "I can never decide whether to watch foreign films dubbed."),
         ("Subtitles keep the original performances, which usually matters more than the effort of reading.",
          "Subtitles generally, since voices are a big part of acting; dubbing is fine for background watching.")),
        (("Do you know any good film podcasts that avoid spoilers?",
          "I'd like a podcast that talks about films without spoiling them."),
         ("Look for review shows that mark spoilers clearly; many have a spoiler-free section first.",
          "Plenty of critics run spoiler-free episodes for new releases; try a couple and keep the one whose taste matches yours.")),
    ],
    "gift": [
        (("I'm so bad at presents. Is it okay to just give a voucher?",
          "Would a gift card be lazy, do you think?"),
         ("A voucher for a specific shop they love feels thoughtful; add a handwritten note and it's far from lazy.",
          "Not lazy if it's specific. A voucher for a favourite bookshop or a class says you thought about it.")),
        (("What's a good present for someone who's into {hobby}?",
          "Any ideas for a person who's obsessed with {hobby}?"),
         ("Consumables and upgrades are safe bets: people who love {hobby} usually already own the basics.",
          "Experiences often beat objects: a class, a day out or a subscription related to {hobby} could be memorable.")),
        (("Should I wrap it myself or pay for gift wrapping?",
          "My wrapping skills are terrible. Does it matter?"),
         ("Homemade wrapping is charming even if it's wonky; brown paper and string looks nice with no skill at all.",
          "A nice bag with tissue paper looks great and takes seconds. Nobody remembers the wrapping anyway.")),
        (("Is it worth ordering online this close to the date?",
          "Will delivery arrive in time if I order this week?"),
         ("Check the estimated delivery and choose a local shop if it's tight; some offer click and collect the same day.",
          "Most places deliver within a few days, but pay for tracked shipping so you're not left guessing.")),
        (("Should I get a card as well, or is that old-fashioned?",
          "Do people still bother with birthday cards these days?"),
         ("A card with a few personal lines is often what people keep longest, long after the gift is forgotten.",
          "Absolutely; a short note about a shared memory makes any present feel more personal.")),
    ],
    "money": [
        (("Is a spreadsheet enough or should I use a budgeting app?",
          "Should I use a budgeting app or a good old spreadsheet?"),
         ("A spreadsheet is plenty if you'll actually update it; apps help mostly by categorising spending automatically.",
          "Whichever you'll check weekly. Apps are easier to keep up, spreadsheets are more flexible.")),
        (("I think I'm paying for too many subscriptions.",
          "How do I find all the subscriptions I've forgotten about?"),
         ("Go through three months of bank statements and list every recurring payment; most people find at least one forgotten one.",
          "Your bank app may list recurring payments. Cancel anything you haven't used in the last month.")),
        (("Should the savings go in a separate account?",
          "Does it help to keep savings somewhere I can't see them every day?"),
         ("Yes, a separate account, ideally at another bank, makes it less tempting to dip in; automate the transfer on payday.",
          "Out of sight really helps. Set up a standing order for the day after payday so it happens before you can spend it.")),
        (("How big should an emergency fund be, roughly?",
          "What do people mean by three months of expenses?"),
         ("Three to six months of essential costs is the usual guide: rent, bills, food and transport, not everything you spend.",
          "Add up rent, utilities, groceries and transport for a month and multiply by three to start with.")),
        (("Is it silly to track every coffee I buy?",
          "Do small purchases really matter in a budget?"),
         ("Tracking them for a month is eye-opening; after that, a weekly fun-money amount is simpler than logging every coffee.",
          "They add up, but the big wins are usually rent, transport and subscriptions. Don't let coffee guilt distract you.")),
    ],
    "language": [
        (("How many new words a day is realistic for {lang}?",
          "Is ten new {lang} words a day too ambitious?"),
         ("Ten a day is realistic if you review old ones too; spaced repetition apps make the reviewing painless.",
          "Five to ten is sustainable. Reviewing yesterday's words matters more than adding lots of new ones.")),
        (("Should I watch {lang} shows with subtitles in English or in {lang}?",
          "Do subtitles in {lang} actually help, or is it cheating?"),
         ("Start with {lang} subtitles once you know the basics; they connect sound and spelling without translating everything.",
          "Not cheating at all. Same-language subtitles are one of the best ways to train your ear.")),
        (("I'm embarrassed to speak {lang} out loud. How do I get over that?",
          "My accent in {lang} is awful and it stops me talking."),
         ("Everyone sounds awkward at first; try shadowing short audio clips alone before speaking with people.",
          "Accents improve with use, not with waiting. Short conversations with patient people are the fastest fix.")),
        (("Do you know any good podcasts for learning {lang}?",
          "What should I listen to on my commute to practise {lang}?"),
         ("Look for slow news podcasts or learner series with transcripts; listening while reading along works really well.",
          "Podcasts aimed at learners, with transcripts, are ideal. Replay short segments rather than whole episodes.")),
        (("Is a grammar book worth it or should I just learn phrases?",
          "Do I need to study {lang} grammar properly?"),
         ("A bit of both: phrases get you talking quickly, and a grammar reference explains the patterns you keep hearing.",
          "Learn the phrases first and look up grammar when something puzzles you. It sticks better that way.")),
    ],
    "fitness": [
        (("How do I stop my shins hurting when I run?",
          "My shins ache after every run. What am I doing wrong?"),
         ("It's often too much too soon; cut the distance back, run on softer ground and check your shoes aren't worn out.",
          "Increase weekly distance slowly, about ten percent at most, and add calf raises to your routine.")),
        (("Should I stretch before or after running, or both?",
          "Is stretching before a run actually useful, or a waste of time?"),
         ("Do dynamic moves like leg swings before, and save longer static stretches for after.",
          "A short dynamic warm-up beforehand and gentle stretching afterwards is the usual advice.")),
        (("What should I eat before a long run?",
          "I never know what to eat before training."),
         ("Something light with carbohydrates an hour or two before, like toast with honey or a banana.",
          "Keep it simple and familiar: porridge or a banana a couple of hours before, and water.")),
        (("How many rest days do I really need?",
          "I feel lazy whenever I take days off from training."),
         ("At least one or two a week; muscles adapt during rest, not during the workout itself.",
          "Rest days are part of training. Easy walks or gentle yoga count as active recovery.")),
        (("Is it worth buying a running watch, or is that overkill?",
          "Do I need a fancy watch to train properly?"),
         ("Not necessary; a phone app tracks distance fine. A watch is nice if you like data or run without your phone.",
          "It helps with pacing, but plenty of people train well with just a free app and a simple plan.")),
        (("Any tips for running in the rain without being miserable?",
          "How do I make myself go out when it's pouring?"),
         ("A cap keeps the rain off your face, and lay out your kit the night before so the decision is already made.",
          "Wear a light shell and accept you'll get wet. A hot shower afterwards is a great motivator.")),
    ],
    "work": [
        (("How do I say no to extra work without sounding difficult?",
          "My manager keeps adding tasks. How do I push back?"),
         ("Ask which current task should move down the list to make room; it frames it as prioritising rather than refusing.",
          "Be specific about your current load and offer a realistic date instead of a flat no.")),
        (("Can you help me write a short status update for {project}?",
          "I need to send a progress note on {project}. Any structure?"),
         ("Try three parts: what's done, what's next and what's blocked, with one line each and a date for the next milestone.",
          "Keep it scannable: a one-line summary at the top, then progress, risks and what you need from others.")),
        (("Meetings are eating my whole week. Any ideas?",
          "How do I protect time for actual work?"),
         ("Block two focus mornings in your calendar and decline meetings without an agenda; most people respect that.",
          "Suggest shorter default meetings and ask whether some updates could be written instead.")),
        (("How do I give feedback to a colleague who keeps missing deadlines?",
          "A teammate is always late with their part. How do I raise it?"),
         ("Talk privately, describe the specific impact, and ask what's getting in the way before suggesting fixes.",
          "Keep it about the work, not the person: one concrete example, the effect it had and a question about what would help.")),
        (("I always underestimate how long things take at work.",
          "My time estimates are always way off. Any tricks?"),
         ("Break tasks into pieces under a day, estimate those and add a buffer of a third for surprises.",
          "Compare your last few estimates with reality and use that ratio; most people are off by about the same factor.")),
        (("Is it okay to send emails late in the evening?",
          "Should I stop answering work messages at night?"),
         ("Scheduling them to send in the morning avoids setting an expectation that you're always available.",
          "Protecting your evenings usually makes you better at the job. Set a cut-off time and mute notifications.")),
    ],
    "weekend": [
        (("Any ideas if it rains the whole time?",
          "What's a good backup plan for a wet day?"),
         ("A museum, a long lunch or a cinema matinee make a good rainy backup; check opening hours before you set off.",
          "Keep an indoor option in your pocket: a gallery, a bouldering wall or a board game café.")),
        (("What should we pack for a day outside?",
          "Can you give me a quick list for a day out?"),
         ("Water, snacks, sun cream, a light layer and a small first-aid kit cover most days out.",
          "Pack layers, a refillable bottle, something to sit on and a charged phone. Snacks prevent most arguments.")),
        (("Do you think we should leave early to avoid the crowds?",
          "Is it worth setting an alarm to beat the crowds?"),
         ("Yes, getting there before ten usually makes a big difference, especially on a sunny day.",
          "An early start means easier parking and quieter paths; you can always have a nap later.")),
        (("I need a relaxing weekend more than anything, honestly.",
          "I'm exhausted, I should probably plan less for once."),
         ("Then keep it to one plan per day and leave the rest empty; rest counts as a good use of a weekend.",
          "A slow morning, one outing and an early night is a perfectly good weekend.")),
    ],
    "home": [
        (("How many coats of paint do walls usually need?",
          "Is one coat of paint ever enough on a wall?"),
         ("Usually two, and three if you're covering a dark colour; a primer helps over patchy walls.",
          "Plan for two coats with enough drying time between them. Cheaper paint often needs a third.")),
        (("Should I use rollers or brushes for the walls?",
          "What tools do I actually need for painting a room?"),
         ("A roller for the big areas, an angled brush for edges, decent masking tape and a dust sheet.",
          "Rollers are much faster for walls. Cut in the edges with a brush first, then roll while it's still wet.")),
        (("How do I stop paint from peeling in the bathroom?",
          "Which kind of paint survives steam in a bathroom?"),
         ("Use a paint made for kitchens and bathrooms, clean the walls well and keep the room ventilated while it cures.",
          "A moisture-resistant paint and a good extractor fan make the biggest difference.")),
        (("Our houseplants keep dying. What am I doing wrong?",
          "I kill every plant I buy. Any advice?"),
         ("Overwatering is the usual culprit; let the top few centimetres dry out and check the light each plant needs.",
          "Most indoor plants die from too much love. Water less, and move them closer to a window.")),
    ],
    "generic": [
        (("Sorry, I got distracted by the doorbell. Where were we?",
          "Back now, the delivery driver needed a signature."),
         ("No problem at all. We were just working through the plan; carry on whenever you're ready.",
          "Welcome back. Take your time, I'm happy to pick up wherever you like.")),
        (("It's been one of those weeks, to be honest.",
          "I'm running on about four hours of sleep today."),
         ("Sorry to hear that. Let's keep this simple and practical so it's one less thing on your mind.",
          "That sounds tiring. I'll keep my answers short so you can get through the list quickly.")),
        (("Can you keep the answers short today? I'm on my phone.",
          "Short answers please, I'm typing on the bus."),
         ("Of course, I'll keep it brief and use short lists.",
          "Sure thing, short and to the point from here on.")),
        (("Thanks, that's genuinely helpful, I really appreciate it.",
          "Okay, that makes a lot of sense actually."),
         ("Glad it helps. Let me know if you want to go into more detail on any part.",
          "Great. Shall we move on to the next thing, or go deeper on this one?")),
        (("Let me think about it and come back to you.",
          "I need to check a couple of things first."),
         ("Of course, there's no rush. I'll be here when you want to continue.",
          "Sounds good. Jot down anything that comes up and we can go through it together.")),
        (("Honestly, I'm overthinking this whole thing, aren't I?",
          "Am I making this more complicated than it needs to be?"),
         ("A little, maybe, but that's understandable. Let's pick the simplest option that works and adjust later.",
          "It happens to everyone. Decide on the two things that matter most and let the rest be good enough.")),
    ],
}

USER_PREFIXES = ["Quick question: ", "Random one, but ", "Also, ", "Okay, next thing. ", "One more thing: ", "Hmm, ",
                 "Sorry if this is obvious, but ", "Before I forget, ", "Slightly unrelated, but ", "While I think of it, ",
                 "Right, ", "So, ", "Another thing I've been wondering: ", "This might be a silly question, but ",
                 "Honest question: ", "Okay, practical question. ", "Can I ask something? ", "Going back to this, "]
USER_ASIDES = [" I keep going back and forth on it.", " It's been on my mind all week.", " No rush on this one.",
               " I've read conflicting advice online.", " Everyone I ask says something different.",
               " I'd rather sort it out now than stress later.", " Be honest with me.", " I feel like I should know this.",
               " Last time I got it completely wrong.", " Keep it practical, please.", " I'm trying to be more organised."]
ASSISTANT_LEADS = ["Good question. ", "Short answer: ", "Happy to help with that. ", "Honestly, ", "In my experience, ",
                   "It depends a little, but ", "A few thoughts. ", "Fair question. ", "Sure. ", "Generally speaking, ",
                   "Here's my take. ", "Good one. "]
ASSISTANT_FOLLOWUPS = [" Want me to put that into a short checklist?", " Shall I go into more detail?",
                       " Let me know if you want a few alternatives.", " I can tailor it further if you tell me more.",
                       " Does that fit what you had in mind?", " Happy to dig into any part of that.",
                       " Tell me how it goes.", " I can write up a quick plan if that helps.",
                       " Would a step-by-step version be useful?", " Let me know what you decide."]

# Openers and closers are put together from parts; the time words in them must fit the hour.
OPEN_GREETINGS = ["Hi!", "Hello again.", "Hey.", "Morning!", "Good morning.", "Evening.", "Good evening.", "Hi there.",
                  "Hello!", "Hey, it's me again.", "Right.", "Okay."]
OPEN_CONTEXTS = ["I could really use your help with something.", "I have a quick question before I start work.",
                 "I finally have a quiet moment to sort a few things out.", "Do you have a minute to help me plan something?",
                 "Lunch break, so let's get a few things sorted.", "Back again with even more questions, sorry about that!",
                 "The coffee has kicked in, so let's do this.", "I've got half an hour before dinner, can we go through some stuff?",
                 "I couldn't sleep, so I might as well get organised.", "It's a rainy afternoon here, perfect for planning.",
                 "I'm on the train and have twenty minutes to kill.", "I've made a list of things I need help with today.",
                 "I've been awake since five, so let's be productive.", "Sorry I disappeared the other day, things got busy.",
                 "I have a few random things to sort out, bear with me.", "Sunday admin time, my least favourite part of the week.",
                 "I need a second brain for a bit.", "Can we pick up some of the stuff from last time?",
                 "The kids are finally asleep, so I have some time.", "I'm waiting for a delivery, so I have some time to kill."]
OPEN_REPLIES = ["Hi! Of course, what are we working on today?", "Good to hear from you. What's on your mind?",
                "Happy to help. Where do you want to start?", "Let's make the most of it. What's first on the list?",
                "No need to apologise at all. What can I help with?", "Sure thing. Tell me what you need and we'll work through it.",
                "Perfect timing. What are we planning together today?", "Of course. Read me the first thing and we'll go from there.",
                "Always happy to help. What's going on with you?", "Let's get a few things off your mind then. Go ahead."]
CLOSE_THANKS = ["Perfect, that's all I needed for now.", "Great, thanks so much.", "Thanks, you've saved me a lot of stress today.",
                "Brilliant, that's really helpful.", "Lovely, I feel much more organised now.", "Okay, that's enough for one day.",
                "Cheers, that's a weight off my mind.", "Thank you, really.", "Great chat, as always.", "Right, that's sorted then."]
CLOSE_LEAVING = ["I'll sort the rest out tomorrow.", "I'm going to log off and get some sleep.", "I'll report back once it's done.",
                 "I'll speak to you again soon.", "I'm off to make dinner.", "I need to run to a meeting now.", "I'll think it over tonight.",
                 "My battery is about to die, so I'll stop here.", "The kettle has boiled, so I'm off.",
                 "I'll be back with more questions soon, no doubt.", "Time to get some actual work done.",
                 "I'll let you know what happens next."]
CLOSE_REPLIES = ["Glad it helped.", "You're welcome.", "Happy to help.", "Any time.", "My pleasure.", "Glad to hear it."]
CLOSE_WISHES = ["Good luck, and let me know how it goes.", "Come back any time if something changes.",
                "Enjoy the rest of your day.", "Sleep well, and we can pick this up whenever you like.",
                "I'd love to hear how it turns out.", "Speak soon, and good luck with everything this week.",
                "Take care, and talk to you soon.", "Enjoy your evening, and take it easy.", "I'll be here whenever you need me.",
                "Enjoy having one less thing to think about."]
ACKS: dict[str, list[str]] = {
    "travel": ["That sounds like a great trip. Want me to sketch a rough day-by-day plan?",
               "Lovely, that's a nice time of year to travel. I can help with bookings or packing whenever you like.",
               "Sounds wonderful. Shall we start with what you'd like to see, or with logistics?",
               "Great choice. Let me know if you want ideas for food, day trips or getting around."],
    "talk": ["That's brilliant news, congratulations! Want help structuring the talk?",
             "Exciting! We can work on the outline and the opening whenever you're ready.",
             "Fantastic. Shall we plan your preparation backwards from the date?"],
    "cooking": ["That sounds delicious. Do you want a shopping list or a cooking timeline?",
                "Lovely choice. I can help you plan the timing so you're not stuck at the stove.",
                "Great idea, that's a very welcoming thing to cook. Want some sides to go with it?",
                "Noted. Let me know if you want to adapt the recipe for the number of people."],
    "visit": ["How nice, you must be looking forward to it. Want help planning the days?",
              "Lovely. Is there anything you want to get ready before the visit?",
              "That will be nice. Let me know if you want ideas for things to do together."],
    "dining": ["That sounds like a lovely evening. Would you go back?",
               "Sounds like a great night out. I'll remember that you liked it.",
               "Nice! It's always good to find a place that's worth returning to."],
    "pet": ["Aww, that's lovely. Anything you want help with on the pet front?",
            "Thanks for the update. Let me know if you'd like tips on care or training.",
            "Good to know. I hope everything goes smoothly."],
    "move": ["That's a big step. Do you want a checklist for the weeks before the move?",
             "Understood. Moving is a lot; shall we break it down into smaller tasks?",
             "Okay, noted. Let me know what you'd like to tackle first."],
    "health": ["Thanks for letting me know. Would you like a reminder list of questions to ask?",
               "Noted. I hope it goes well; let me know if you want help preparing.",
               "Got it. It's good that you're getting it looked at."],
    "books": ["That's a good one to be reading. Let me know what you think when you finish.",
              "Nice, I'd love to hear how it ends up for you.", "It sounds like a great read so far, I must say."],
    "films": ["Fair enough! Would you like a few recommendations in a similar vein?",
              "Thanks for the review. Want me to suggest what to watch next?",
              "Interesting take. It's certainly a film people argue about."],
    "gift": ["Good plan. Want a couple more ideas as backups?", "That sounds thoughtful. I'm sure it will be appreciated.",
             "Nice, that's sorted then. Do you need help with a card message?"],
    "money": ["That's a sensible target. Want help setting up an automatic transfer?",
              "Good decision. Shall we look at where the money could come from each month?",
              "Noted. Tracking it for a few months will show whether it's realistic."],
    "language": ["That's great, regular lessons make a huge difference. Want some practice ideas between sessions?",
                 "Lovely. Shall I make you a short list of study resources?", "Nice progress. Keep going, it really does get easier."],
    "fitness": ["Nice goal. Would you like a simple training plan to work towards it?",
                "Good luck with it! Let me know how the training goes.",
                "Sorry to hear that. Rest and gentle movement usually help; see someone if it doesn't improve."],
    "work": ["That's a lot on your plate. Want help breaking it into milestones?",
             "Understood. Let me know if you want help with planning or updates.",
             "Okay, noted. Shall we look at what needs to happen first?"],
    "weekend": ["That sounds like a lovely plan. Want a backup in case of rain?",
                "Nice, I hope the weather plays along for you.", "Sounds fun! Do you need anything sorted beforehand?"],
    "home": ["That sounds like a nice change. Want a shopping list for the supplies?",
             "Lovely choice. Shall I walk you through the prep so it goes smoothly?"],
    "profile": ["Thanks for telling me, I'll keep that in mind.", "Good to know, I'll remember that for next time.",
                "Noted, that's really useful context for future suggestions.", "Got it, thanks for letting me know about that.",
                "Thanks, that helps me tailor things a bit better for you.", "Understood. I'll factor that in from now on.",
                "That's good context to have, thank you for sharing it.", "Noted. Now, what can I help you with today?"],
}


# --------------------------------------------------------------------------------------------------
# Turns, facts, users and sessions.


class _Turn:
    __slots__ = ("speaker", "text", "id", "at", "session")

    def __init__(self, speaker: str, text: str, session: int) -> None:
        self.speaker, self.text, self.session = speaker, text, session
        self.id = ""
        self.at: datetime | None = None


class _Fact:
    """Something the user said, with the turns that say it and the questions it can answer."""

    def __init__(self, kind: str, keys: list[tuple], turns: list[_Turn], session: int, day: datetime) -> None:
        self.kind, self.keys, self.turns, self.session, self.day = kind, keys, turns, session, day
        self.cands: list[dict[str, Any]] = []
        self.stale = False
        self.group: str | None = None
        self.label: str | None = None
        self.answer: list[_Turn] = []
        self.t_anchor: str | None = None
        self.t_ask: str | None = None

    def ask(self, category: str, tag: str, questions: str | list[str], evidence: list[_Turn], keys=(),
            fresh_only: bool = False) -> None:
        """A candidate question; a list of questions means paraphrases to try in turn."""
        self.cands.append({"category": category, "tag": tag, "questions": [questions] if isinstance(questions, str) else questions,
                           "evidence": evidence, "keys": tuple(keys), "fresh_only": fresh_only, "fact": self})

    def grouped(self, group: str, label: str, answer: list[_Turn], t_ask: str | None = None) -> "_Fact":
        self.group, self.label, self.answer, self.t_ask = group, label, answer, t_ask
        return self


def _pronouns(gender: str) -> dict[str, str]:
    return {"she": "she", "her": "her", "hers": "her"} if gender == "f" else {"she": "he", "her": "him", "hers": "his"}


class _User:
    def __init__(self, rng: random.Random, uid: str, name: str, hard: bool) -> None:
        self.rng, self.id, self.hard = rng, uid, hard
        self.facts: list[_Fact] = []
        self.sessions: list[list[_Turn]] = []
        self.used: dict[str, list] = {}
        self.tmpl_use: dict[tuple[str, int], int] = {}
        self.series: dict[str, dict[str, Any]] = {}
        self.names = [name]
        self.p = self._persona(name)

    # -- pools ------------------------------------------------------------------------------------
    def take(self, pool_name: str, pool: list, unique: bool = False):
        """A value from `pool` this user has not had yet (the pool starts over when it runs out)."""
        used = self.used.setdefault(pool_name, [])
        free = [v for v in pool if v not in used]
        if not free:
            if unique:
                return None
            used.clear()
            free = list(pool)
        value = self.rng.choice(free)
        used.append(value)
        return value

    def name(self, gender: str | None = None) -> tuple[str, str]:
        gender = gender or self.rng.choice("fm")
        pool = FEMALE if gender == "f" else MALE
        free = [n for n in pool if n not in self.names] or pool
        chosen = self.rng.choice(free)
        self.names.append(chosen)
        return chosen, gender

    def tpl(self, key: str, options: list, avoid: set | None = None):
        """The least used of `options` for this user, at random among ties, none of `avoid` while it can."""
        counts = [self.tmpl_use.get((key, i), 0) for i in range(len(options))]
        allowed = [i for i in range(len(options)) if not avoid or (key, i) not in avoid] or list(range(len(options)))
        low = min(counts[i] for i in allowed)
        index = self.rng.choice([i for i in allowed if counts[i] == low])
        self.tmpl_use[(key, index)] = low + 1
        if avoid is not None:
            avoid.add((key, index))
        return options[index]

    # -- persona ----------------------------------------------------------------------------------
    def _persona(self, name: str) -> dict[str, Any]:
        rng = self.rng
        home = rng.choice(HOME_CITIES)
        job = rng.choice(JOBS)
        p: dict[str, Any] = {"home": home, "currency": CURRENCY.get(home, "euros"),
                         "money_scale": {"kronor": 10, "kroner": 10, "shillings": 100}.get(CURRENCY.get(home, ""), 1),
                             "hometown": rng.choice(HOMETOWNS), "hometown_detail": rng.choice(HOMETOWN_DETAILS),
                             "job": {**job, "employer": rng.choice(job["employers"])}}
        self.used["home"] = [home]
        p["partner"] = None
        if rng.random() < 0.65:
            pname, gender = self.name()
            job, detail = rng.choice(PARTNER_JOBS)
            p["partner"] = {"name": pname, "gender": gender, "job": job, "detail": detail}
        relatives = []
        for rel in rng.sample(list(RELATIONS), rng.randint(4, 5)):
            gender = RELATIONS[rel][0] or rng.choice("fm")
            rname, gender = self.name(gender)
            relatives.append({"rel": rel, "name": rname, "gender": gender,
                              "city": self.take("home", HOME_CITIES), "hobby": self.take("hobby", HOBBIES)})
        p["relatives"] = relatives
        friends = []
        for _ in range(3):
            fname, gender = self.name()
            friends.append({"rel": "friend", "name": fname, "gender": gender, "hobby": self.take("hobby", HOBBIES)})
        p["friends"] = friends
        pets = []
        species = rng.choice(["dog", "dog", "cat", "cat", "rabbit"])
        count = 2 if rng.random() < 0.6 else 1
        for i in range(count):
            sp = species if i == 0 or rng.random() < 0.6 else rng.choice([s for s in PETS if s != species])
            pets.append({"species": sp, "breed": self.take("breed", PETS[sp]), "name": self.take("pet", PET_NAMES),
                         "gender": rng.choice("fm"), "age": rng.randint(1, 11), "quirk": rng.choice(PET_QUIRKS)})
        p["pets"] = pets
        p["allergy"] = rng.choice(ALLERGENS) if rng.random() < 0.6 else None
        p["diet"] = rng.choice(DIETS)
        p["instrument"] = rng.choice(INSTRUMENTS) if rng.random() < 0.7 else None
        verb, rest = rng.choice(COMMUTES)
        p["commute"] = (verb, rng.randint(*{"cycle": (3, 14), "walk": (2, 5), "run": (4, 10)}[verb]), rest)
        p["language"] = rng.choice(LANGUAGES)
        return p

    def excluded_tags(self) -> set[str]:
        tags = set(self.p["diet"][1])
        if self.p["allergy"]:
            tags.add(self.p["allergy"][1])
        return tags

    def people(self, partner: bool = True, friends: bool = True) -> list[dict[str, Any]]:
        out = list(self.p["relatives"])
        if friends:
            out += self.p["friends"]
        if partner and self.p["partner"]:
            out.append({"rel": "partner", **self.p["partner"]})
        return out

    def person(self, purpose: str, **kw) -> dict[str, Any]:
        """Someone not yet used for `purpose`, while there is one."""
        return self.take("person:" + purpose, self.people(**kw))


def _who(person: dict[str, Any]) -> dict[str, str]:
    """How to refer to a person: `my sister Ana` in text, `my sister` in a question, a paraphrase, a key."""
    rel, name = person["rel"], person["name"]
    if rel == "friend":
        return {"text": f"my friend {name}", "q": f"my friend {name}", "paras": ["pal", "mate"], "key": f"friend:{name}",
                "para_key": "friend", "name": name, "rel": rel}
    paras = PARTNER_PARAS if rel == "partner" else RELATIONS[rel][1]
    return {"text": f"my {rel} {name}", "q": f"my {rel}", "paras": paras, "key": rel, "para_key": rel, "name": name, "rel": rel}


class _Conv:
    """One session being written."""

    def __init__(self, user: _User, index: int, day: datetime) -> None:
        self.user, self.index, self.day = user, index, day
        self.rng = user.rng
        self.turns: list[_Turn] = []
        self.facts: list[_Fact] = []
        self.used: set = set()

    def say(self, speaker: str, text: str) -> _Turn:
        text = re.sub(r"([.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), re.sub(r"\s+", " ", text).strip())
        turn = _Turn(speaker, _cap(text), self.index)
        self.turns.append(turn)
        return turn

    def ex(self, user_text: str, assistant_text: str) -> tuple[_Turn, _Turn]:
        return self.say("user", user_text), self.say("assistant", assistant_text)

    def pick(self, key: str, options: list[str], **slots) -> str:
        return self.user.tpl(key, options).format(**slots)

    def reply(self, key: str, options: list[str], **slots) -> str:
        return self.vary(self.pick(key, options, **slots), [], ASSISTANT_FOLLOWUPS, 0.0, 0.25)

    def ack(self, topic: str) -> str:
        return self.vary(self.user.tpl("ack:" + topic, ACKS[topic]), [], ASSISTANT_FOLLOWUPS, 0.0, 0.2)

    def fill(self, topic: str, slots: dict[str, str] | None = None) -> None:
        if topic != "generic" and self.rng.random() < 0.1:
            topic = "generic"
        users, assistants = self.user.tpl("fill:" + topic, FILLER[topic], self.used)
        user_text = self.rng.choice(users).format(**(slots or {}))
        assistant_text = self.rng.choice(assistants).format(**(slots or {}))
        self.ex(self.vary(user_text, USER_PREFIXES, USER_ASIDES, 0.45, 0.3),
                self.vary(assistant_text, ASSISTANT_LEADS if user_text.endswith("?") else [], ASSISTANT_FOLLOWUPS, 0.4, 0.35))

    def vary(self, text: str, leads: list[str], tails: list[str], p_lead: float, p_tail: float) -> str:
        """The text with, now and then, a lead-in and a closing remark, within 45 words."""
        rng = self.rng
        if leads and rng.random() < p_lead:
            lead = rng.choice(leads)
            first = text.split(" ", 1)[0]
            lowered = text if first == "I" or first.startswith("I'") or first[1:2].isupper() or first in FIRST_NAMES_SET \
                else text[:1].lower() + text[1:]
            candidate = lead + (lowered if not lead.endswith((". ", "? ", "! ")) else text)
            if len(candidate.split()) <= 45:
                text = candidate
        if rng.random() < p_tail:
            candidate = text + rng.choice(tails)
            if len(candidate.split()) <= 45:
                text = candidate
        return text

    def fact(self, kind: str, keys: list[tuple], turns: list[_Turn]) -> _Fact:
        fact = _Fact(kind, keys, turns, self.index, self.day)
        self.facts.append(fact)
        return fact

    def weave(self, topic: str, blocks: list[tuple], budget: int, slots: dict[str, str] | None = None) -> None:
        """Run the fact blocks, `(exchanges, function[, optional])`, in order, with `budget` exchanges in all:
        optional blocks that do not fit are dropped, and the rest is filler placed at random."""
        kept = []
        for block in blocks:
            needed = sum(b[0] for b in kept) + block[0] + sum(b[0] for b in blocks[blocks.index(block) + 1:] if len(b) < 3)
            if len(block) < 3 or needed < budget:
                kept.append(block)
        fill = max(1, budget - sum(b[0] for b in kept))
        where = [0] * (len(kept) + 1)
        for _ in range(fill):
            where[self.rng.randrange(len(kept) + 1)] += 1
        for i, block in enumerate(kept):
            for _ in range(where[i]):
                self.fill(topic, slots)
            block[1]()
        for _ in range(where[-1]):
            self.fill(topic, slots)

    def decoy(self, chance: float) -> bool:
        return self.rng.random() < (chance * 3 if self.user.hard else chance)


# --------------------------------------------------------------------------------------------------
# Episodes: each writes one topic into a session (fact turns woven into filler) and returns False,
# having written nothing, when it does not apply to this user now.


def _ep_trip(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    dest, wish = u.take("dest", DESTINATIONS)
    comp = _who(u.person("trip"))
    start = c.day + timedelta(days=rng.randint(12, 50))
    dates = _span(start, start + timedelta(days=rng.randint(3, 9)))
    lodging = u.take("lodging", LODGINGS)
    qa = rng.random() < 0.4
    state: dict[str, Any] = {}

    def plan() -> None:
        if not qa:
            t = c.say("user", c.pick("trip:plan", [
                "{comp} and I are going to {dest} {dates}; we finally booked the flights last night.",
                "Booked it! {dest}, {dates}, just me and {comp}.",
                "I'm planning a trip to {dest} {dates} with {comp}, and I want to keep it fairly relaxed.",
                "{comp} talked me into {dest}, so we're going {dates}. Neither of us has been before."],
                comp=comp["text"], dest=dest, dates=dates))
            c.say("assistant", c.ack("travel"))
            state["plan"], state["dest_turn"] = [t], t
        else:
            t1 = c.say("user", c.pick("trip:qa1", [
                "I've finally got some time off {dates}, and {comp} is coming away with me.",
                "Good news: {comp} and I both got our leave approved, {dates}."], comp=comp["text"], dates=dates))
            c.say("assistant", c.pick("trip:qa2", ["That's a proper break. Where are you two heading?",
                                                   "Lovely! Have you decided where you're going yet?",
                                                   "How exciting. Where are you thinking of going?",
                                                   "You both deserve it. So where's the destination this time?",
                                                   "Nice timing. Do you have somewhere in mind already?"]))
            t2 = c.say("user", c.pick("trip:qa3", [
                "{dest}. {name} has been talking about it for years and the flights were cheap.",
                "We settled on {dest}; {name} found a good deal and I've always wanted to go.",
                "Probably {dest}, since neither of us has been and the direct flights are cheap."], dest=dest, name=comp["name"]))
            c.say("assistant", c.ack("travel"))
            state["plan"], state["dest_turn"] = [t1, t2], t2

    def stay() -> None:
        t = c.say("user", c.pick("trip:stay", [
            "For {dest} we booked {lodging}, which looked lovely in the photos.",
            "We're staying at {lodging} while we're in {dest}; it was cheaper than the hotels.",
            "Accommodation in {dest} is sorted: {lodging}.",
            "In {dest} we'll be at {lodging}, so at least that part is done."], dest=dest, lodging=lodging))
        c.say("assistant", c.reply("trip:stay-ack", [
            "Nice, that sounds like a good base for exploring the city.",
            "Good, that's the biggest thing sorted. Transport and food are easy from there.",
            "That sounds comfortable. Worth checking the check-in times before you fly."]))
        state["stay"] = t

    def want() -> None:
        t = c.say("user", c.pick("trip:wish", [
            "The one thing I really want to do in {dest} is {wish}.",
            "Whatever else happens in {dest}, I want to {wish}.",
            "My only real must-do in {dest} is to {wish}."], dest=dest, wish=wish))
        c.say("assistant", c.reply("trip:wish-ack", [
            "That's a great thing to plan around. Book ahead if you can, it can get busy.",
            "Good choice. I'd do it early in the trip in case the weather turns later on.",
            "Lovely. Let's build the rest of the days around that, then."]))
        state["wish"] = t

    def decoy() -> None:
        other, _ = u.take("dest", DESTINATIONS)
        who, _g = u.name()
        c.ex(c.pick("trip:decoy", [
            "My colleague {who} just got back from {other} and says the food alone was worth the trip.",
            "{who} from work is off to {other} next month, so we've been comparing notes on packing."], who=who, other=other),
            c.vary(c.pick("trip:decoy-ack", ["It's always handy to have someone to swap travel tips with.",
                                             "Nice, first-hand tips are usually better than any guidebook.",
                                             "Useful to have someone who has just been, or is about to go."]), [], ASSISTANT_FOLLOWUPS, 0, 0.3))

    blocks = [(1 if not qa else 2, plan), (1, stay)]
    if rng.random() < 0.6:
        blocks.append((1, want, True))
    if c.decoy(0.15):
        blocks.insert(rng.randrange(len(blocks) + 1), (1, decoy, True))
    c.weave("travel", blocks, budget)

    keys = [("trip", dest), ("trip_with", comp["key"]), ("trip_with_para", comp["para_key"])]
    f = c.fact("trip", keys, state["plan"] + [state["stay"]] + ([state["wish"]] if "wish" in state else []))
    f.grouped("trip", f"the {dest} trip", [state["dest_turn"]], "Where was I planning to travel")
    f.t_anchor = f"told you about the {dest} trip"
    f.ask("single", "trip-stay", [f"Where am I staying in {dest}?", f"What accommodation did I book for {dest}?"],
          [state["stay"]], [("trip", dest)])
    if "wish" in state:
        f.ask("single", "trip-wish", f"What do I most want to do in {dest}?", [state["wish"]], [("trip", dest)])
    if not qa:
        f.ask("single", "trip-who", f"Who is coming with me to {dest}?", state["plan"], [("trip", dest)])
        f.ask("single", "trip-when", f"When am I going to {dest}?", state["plan"], [("trip", dest)])
        f.ask("multi", "trip-whowhere", f"Who is coming with me to {dest}, and where are we staying?",
              state["plan"] + [state["stay"]], [("trip", dest)])
        qs = []
        for para in comp["paras"]:
            qs += [f"Where will my {para} and I be sleeping on our getaway?",
                   f"What lodging did I reserve for the getaway with my {para}?",
                   f"Which place did I pick to rest our heads on the holiday with my {para}?"]
        f.ask("paraphrase", "trip-para", qs, state["plan"] + [state["stay"]], [("trip_with_para", comp["para_key"])])
    else:
        f.ask("multi", "trip-qa", f"Where am I travelling with {comp['q']}, and on which dates?", state["plan"],
              [("trip_with", comp["key"])])
    return True


def _ep_conference(c: _Conv, budget: int) -> bool:
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
    state: dict[str, _Turn] = {}

    def news() -> None:
        state["u1"] = c.say("user", c.pick("conf:1", [
            "Big news: my talk on {talk} got accepted at {conf}!",
            "I'm speaking at {conf} about {talk}, which is terrifying and exciting at the same time.",
            "They accepted my proposal for {conf}, a talk on {talk}. I can't quite believe it."], talk=talk, conf=conf))
        state["a"] = c.say("assistant", c.pick("conf:2", [
            "Congratulations! Which city is {conf} in this year?", "That's great news. Where is {conf} being held?",
            "Well done! Remind me, where does {conf} take place?"], conf=conf))
        state["u2"] = c.say("user", c.pick("conf:3", [
            "{city}, the week of {monday}. I've never been, so I'm quite excited.",
            "It's in {city}, starting on {when}; the organisers cover the hotel, luckily.",
            "{city} this time, opening on {when}. My manager already approved the flights."],
            city=city, monday=_date(monday), when=_date(when)))
        c.say("assistant", c.ack("talk"))

    c.weave("talk", [(2, news)], budget, {"conf": conf})
    f = c.fact("conference", [("conf", conf), ("conf_any",)], [state["u1"], state["a"], state["u2"]])
    f.t_anchor = f"said my talk at {conf} had been accepted"
    f.answer = [state["u1"]]
    f.ask("multi", "conf-where", f"Which city is {conf} in, and when does it start?", [state["a"], state["u2"]], [("conf", conf)])
    f.ask("single", "conf-talk", f"What is my talk at {conf} about?", [state["u1"]], [("conf", conf)])
    f.ask("paraphrase", "conf-para", ["What subject will I be presenting on?", "What's the theme of the session I'm giving?",
                                      "On what subject am I presenting?"], [state["u1"]], [("conf_any",)])
    return True


def _dish(u: _User) -> str:
    banned = u.excluded_tags()
    options = [d for d, tags in DISHES if not tags & banned]
    return u.take("dish", options)


def _dish_fact(c: _Conv, turn: _Turn, dish: str) -> _Fact:
    f = c.fact("dish", [("dish", dish)], [turn])
    return f.grouped("dish", dish, [turn], "What was I planning to cook")


def _ep_visit(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    person = u.person("visit", partner=False, friends=False)
    who = _who(person)
    pr = _pronouns(person["gender"])
    arrive = c.day + timedelta(days=rng.randint(1, 6))
    wd = WEEKDAYS[arrive.weekday()]
    dish = _dish(u)
    qa = rng.random() < 0.5
    state: dict[str, _Turn] = {}
    slots = {"who": who["text"], "name": person["name"], "rel": person["rel"], "city": person["city"], "wd": wd, **pr,
             "dish": dish}

    def visit() -> None:
        state["visit"] = c.say("user", c.pick("visit:1", [
            "My {rel} {name} flies in from {city} on {wd}, and {she}'s staying with us for a few days.",
            "{name}, my {rel}, is coming over from {city} on {wd} for a few nights.",
            "Heads up: my {rel} {name} arrives from {city} on {wd}, so I'm clearing out the spare room."], **slots))
        if qa:
            c.say("assistant", c.pick("visit:qa", ["How lovely. Are you cooking something special for {her}?",
                                                   "That's nice! What are you planning to cook while {she}'s with you?"], **slots))
            state["dish"] = c.say("user", c.pick("visit:qa2", [
                "Yes, {dish}. {she} always asks for it whenever {she} visits.",
                "I think {dish}, it's what we always had growing up.",
                "Probably {dish}, if I can find all the ingredients in time."], **slots))
            c.say("assistant", c.ack("cooking"))
        else:
            c.say("assistant", c.ack("visit"))

    def cook() -> None:
        state["dish"] = c.say("user", c.pick("visit:dish", [
            "For the first night I'm going to make {dish}; it's {hers} favourite.",
            "I'm planning to cook {dish} for {hers} first evening here.",
            "The welcome dinner will be {dish}, unless I panic and order pizza."], **slots))
        c.say("assistant", c.ack("cooking"))

    blocks = [(2, visit)] if qa else [(1, visit), (1, cook)]
    c.weave("cooking", blocks, budget)
    key = ("visit", person["rel"])
    f = c.fact("visit", [key], [state["visit"]])
    f.t_anchor = f"mentioned my {person['rel']}'s visit"
    f.answer = [state["visit"]]
    _dish_fact(c, state["dish"], dish)
    f.ask("temporal", "visit-cook", f"What did I say I was cooking on the day I mentioned my {person['rel']}'s visit?",
          [state["visit"], state["dish"]], [key, ("dish", dish)])
    f.ask("single", "visit-when", f"Where is my {person['rel']} coming from, and what day does {pr['she']} arrive?",
          [state["visit"]], [key])
    qs = []
    for para in who["paras"]:
        qs += [f"When does my {para} land, and from which place?", f"On what day will my {para} get here, and where from?",
               f"Which day is my {para} due, and where does {pr['she']} live?"]
    f.ask("paraphrase", "visit-para", qs, [state["visit"]], [key])
    return True


def _ep_mealprep(c: _Conv, budget: int) -> bool:
    dish = _dish(c.user)
    state: dict[str, _Turn] = {}

    def cook() -> None:
        state["t"] = c.say("user", c.pick("prep:1", [
            "I'm batch cooking {dish} on Sunday so my lunches are sorted for the week.",
            "Tonight's experiment is {dish}, the first time I've tried making it.",
            "I'm making {dish} for dinner tonight, from a recipe a friend sent me.",
            "Friends are coming round tomorrow and I've promised them {dish}."], dish=dish))
        c.say("assistant", c.ack("cooking"))

    c.weave("cooking", [(1, cook)], budget)
    _dish_fact(c, state["t"], dish)
    return True


def _ep_restaurant(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    banned = u.excluded_tags()
    rest, cuisine, loved, _tags = u.take("rest", [r for r in RESTAURANTS if not r[3] & banned])
    street = rng.choice(STREETS)
    occasions = [o for o in OCCASIONS if u.p["partner"] or not o[2]]
    occ = u.take("occasion", occasions, unique=True)
    state: dict[str, _Turn] = {}
    slots = {"rest": rest, "cuisine": cuisine, "a_cuisine": _a(cuisine), "street": street, "loved": loved, "occ": occ[0] if occ else ""}

    def went() -> None:
        if occ:
            state["went"] = c.say("user", c.pick("rest:1", [
                "We went to {rest}, the {cuisine} place on {street}, for {occ}.",
                "For {occ} we finally tried {rest} on {street}; it's {cuisine} and always packed.",
                "{rest} on {street} was our pick for {occ}, {a_cuisine} spot a friend recommended."], **slots))
        else:
            state["went"] = c.say("user", c.pick("rest:1b", [
                "We had dinner at {rest}, the {cuisine} place on {street}, on a whim last night.",
                "Last night we ended up at {rest} on {street}, a little {cuisine} restaurant we'd walked past for months."], **slots))
        c.say("assistant", c.ack("dining"))

    def dish() -> None:
        state["dish"] = c.say("user", c.pick("rest:2", [
            "The best thing I've eaten in months? The {loved} at {rest}.",
            "I'm still thinking about the {loved} at {rest}, honestly.",
            "At {rest} we shared everything, but the {loved} stole the show."], **slots))
        c.say("assistant", c.reply("rest:2a", ["Sounds like you'd go back just for that one dish.",
                                              "That's the kind of dish worth crossing town for.",
                                              "Noted. That sounds like a very good reason to return."]))

    def decoy() -> None:
        other = u.take("rest", RESTAURANTS)
        friend = rng.choice(u.p["friends"])["name"]
        c.ex(f"{friend} keeps telling me to try {other[0]}, the {other[1]} place, but we haven't made it there yet.",
             c.vary(c.pick("rest:decoy-ack", ["It sounds like it's worth a visit at some point, then.",
                                              "Maybe that's one for the next special occasion.",
                                              "Add it to the list; a friend's recommendation is usually a good sign."]), [], ASSISTANT_FOLLOWUPS, 0, 0.3))

    blocks = [(1, went), (1, dish)]
    if c.decoy(0.15):
        blocks.insert(rng.randrange(3), (1, decoy, True))
    c.weave("dining", blocks, budget)
    f = c.fact("restaurant", [("rest", rest)] + ([("occasion", occ[0])] if occ else []), [state["went"], state["dish"]])
    f.grouped("restaurant", rest, [state["went"]], "Which restaurant had I just been to")
    f.ask("single", "rest-dish", f"What dish did I love at {rest}?", [state["dish"]], [("rest", rest)])
    if occ:
        key = ("occasion", occ[0])
        f.ask("single", "rest-occ", f"Which restaurant did we go to for {occ[0]}?", [state["went"]], [key])
        f.ask("multi", "rest-multi", f"What was the best dish at the place we went to for {occ[0]}?",
              [state["went"], state["dish"]], [key])
        f.ask("paraphrase", "rest-para", [f"Where did we eat {occ[1]}?", f"Which spot did we dine at {occ[1]}?"],
              [state["went"]], [key])
    return True


def _ep_pet(c: _Conv, budget: int) -> bool:
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
    pr = _pronouns(pet["gender"])
    slots = {"name": pet["name"], "breed": pet["breed"], "age": NUMBERS[pet["age"]], "quirk": pet["quirk"], "sp": pet["species"], **pr}
    state: dict[str, _Turn] = {}

    def intro() -> None:
        if i == 0:
            state["t"] = c.say("user", c.pick("pet:intro", [
                "Our {breed} {name} is {age} now and still {quirk}.",
                "{name}, my {age}-year-old {breed}, {quirk}, which is driving me mad this week.",
                "I should mention I have a {breed} called {name}, who {quirk}."], **slots))
        else:
            state["t"] = c.say("user", c.pick("pet:second", [
                "Big news at home: we adopted a second {sp}, a {breed} called {name}.",
                "Meet the newest member of the family: {name}, a {age}-year-old {breed} from the shelter.",
                "We brought {name} home on Saturday, a {breed}, so now there are two of them."], **slots))
        c.say("assistant", c.ack("pet"))

    def vet() -> None:
        state["t"] = c.say("user", c.pick("pet:vet", [
            "{name} has a vet appointment on {wd} for {reason}.",
            "I'm taking {name} to the vet on {wd} because of {reason}.",
            "Vet visit for {name} on {wd}, for {reason}. {she} is not going to enjoy it."],
            wd=WEEKDAYS[(c.day + timedelta(days=rng.randint(1, 6))).weekday()], reason=rng.choice(VET_REASONS), **slots))
        c.say("assistant", c.reply("pet:vet-ack", ["Poor thing. I hope it turns out to be nothing serious.",
                                                  "Good that you're getting it checked early. Fingers crossed.",
                                                  "Let me know how it goes; I hope it's a quick visit."]))

    def decoy() -> None:
        other = u.take("pet", PET_NAMES)
        breed = rng.choice(PETS["dog"])
        c.ex(f"Our neighbour's {breed} {other} is staying with us for a night next week, which should be chaotic.",
             c.vary(c.pick("pet:decoy-ack", ["That will be lively! Keep the food bowls separate and it should go fine.",
                                             "A sleepover, how fun. A quiet corner for each of them helps a lot."]), [], ASSISTANT_FOLLOWUPS, 0, 0.3))

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
        f.ask("paraphrase", "pet-breed", [f"What breed is our {para}?" for para in SPECIES_PARA[species]], [t],
              [("species", species)])
        if i == 1:
            first = s["intro"][0]
            sp0 = pets[0]["species"]
            q = (f"What are the names of both of my {species}s?" if sp0 == species
                 else f"What are my {sp0} and my {species} called?")
            f.ask("multi", "pet-both", q, [first.turns[0], t])
    else:
        s["vet"].add(i)
        f = c.fact("vet", [("vet", pet["name"])], [t])
        f.t_anchor = f"told you about {pet['name']}'s vet appointment"
        f.answer = [t]
        f.ask("single", "pet-vet", f"Why is {pet['name']} going to the vet?", [t], [("vet", pet["name"])])
        f.ask("paraphrase", "pet-vet-para",
              [q for para in SPECIES_PARA[species] for q in (f"What health problem is our {para} being checked for?",
                                                            f"Why does our {para} need to see the animal doctor?")],
              [t], [("species", species), ("vet", pet["name"])])
    return True


def _ep_move(c: _Conv, budget: int) -> bool:
    u = c.user
    s = u.series.setdefault("move", {"stage": 0, "last": -9})
    if s["stage"] >= 3 or c.index - s["last"] < 2:
        return False
    stage = s["stage"]
    state: dict[str, _Turn] = {}
    if stage == 0:
        s["c1"] = u.take("home", HOME_CITIES)
        month = MONTHS[(c.day + timedelta(days=c.rng.randint(20, 40))).month - 1]

        def block() -> None:
            state["t"] = c.say("user", c.pick("move:1", [
                "Big news: we're moving to {c1} at the end of {month}; we signed the lease on a flat yesterday.",
                "It's official, we're leaving {home} for {c1} at the end of {month}.",
                "We've decided to move to {c1}, hopefully by the end of {month}, for a bit more space."],
                c1=s["c1"], month=month, home=u.p["home"]))
            c.say("assistant", c.ack("move"))
    elif stage == 1:
        s["c2"] = u.take("home", HOME_CITIES)

        def block() -> None:
            state["t"] = c.say("user", c.pick("move:2", [
                "Change of plan with the move: the {c1} flat fell through, so we're going to {c2} instead.",
                "Update on the move: {c1} is off because the landlord pulled out, and we've signed for a place in {c2}.",
                "Well, the move is now to {c2}, not {c1}; the contract there collapsed at the last minute."],
                c1=s["c1"], c2=s["c2"]))
            c.say("assistant", c.reply("move:2a", ["That's frustrating, but good that you found something else so quickly.",
                                                  "What a rollercoaster. At least you have a signed contract now.",
                                                  "Oh no. Well, fingers crossed this one goes more smoothly."]))
    else:
        def block() -> None:
            c.ex(c.pick("move:3", ["We've been in the new flat for a week and the boxes are finally unpacked.",
                                   "The move is done! Everything arrived in one piece except two wine glasses."]),
                 c.pick("move:3a", ["Congratulations on getting through it. Enjoy settling in and exploring the new neighbourhood.",
                                    "Well done, the worst part is over. Time to find your new favourite café.",
                                    "That's a huge relief, I imagine. Enjoy the first quiet evening in the new place."]))

    c.weave("move", [(1, block)], budget)
    s["stage"], s["last"] = stage + 1, c.index
    if stage == 0:
        f = c.fact("move", [("move",)], [state["t"]])
        f.t_anchor = f"told you we were moving to {s['c1']}"
        f.answer = [state["t"]]
        s["fact"] = f
    elif stage == 1:
        first = s["fact"]
        f = c.fact("move-change", [], [state["t"]])
        ev = [first.turns[0], state["t"]]
        first.stale = True
        f.ask("multi", "move", ["Which city am I moving to?", "Where am I moving to now?"], ev)
        f.ask("temporal", "move", "Where was I planning to move before the plan changed?", ev)
        f.ask("paraphrase", "move", ["Which town are we relocating to after the first option collapsed?",
                                     "To which town are we relocating in the end?",
                                     "What is our final relocation destination?"], ev)
    return True


def _appt_time(c: _Conv) -> tuple[datetime, str]:
    when = c.day + timedelta(days=c.rng.randint(2, 20))
    while when.weekday() >= 5:
        when += timedelta(days=1)
    return when, _clock(c.rng.randint(8, 17), c.rng.choice([0, 0, 15, 30, 45]))


def _ep_health(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    pending = [f for f in u.facts if f.kind == "appt" and not f.stale and c.index - f.session >= 1
               and f.when > c.day + timedelta(days=1)]  # type: ignore[attr-defined]
    state: dict[str, _Turn] = {}
    if pending and rng.random() < (0.6 if u.hard else 0.3):
        orig = rng.choice(pending)
        short = APPOINTMENTS[orig.label_type][1]
        when, clock = _appt_time(c)

        def moved() -> None:
            state["t"] = c.say("user", c.pick("appt:2", [
                "The clinic moved my {short} appointment to {day} at {clock}, which is a bit annoying.",
                "Small change: my {short} appointment got pushed to {day} at {clock}.",
                "They rang to reschedule, so the {short} appointment is now {day} at {clock}."],
                short=short, day=_day(when), clock=clock))
            c.say("assistant", c.reply("appt:2a", ["Okay, thanks for the update. I'll keep the new time in mind.",
                                                  "Thanks, good to have the updated time written down somewhere.",
                                                  "Annoying, but at least it's rebooked. Want a reminder the day before?"]))

        c.weave("health", [(1, moved)], budget)
        orig.stale = True
        f = c.fact("appt-moved", [], [state["t"]])
        ev = [orig.turns[0], state["t"]]
        f.ask("multi", "appt", f"When is my {short} appointment now?", ev, orig.keys[:1])
        f.ask("temporal", "appt", f"When was my {short} appointment originally booked for, before it moved?", ev, orig.keys[:1])
        return True

    kind = u.take("appt", list(APPOINTMENTS))
    phrase, short, reasons, paras = APPOINTMENTS[kind]
    when, clock = _appt_time(c)

    def booked() -> None:
        state["t"] = c.say("user", c.pick("appt:1", [
            "I've got {a_phrase} on {day} at {clock}, {reason}.",
            "Note to self: {phrase} on {day} at {clock}, {reason}.",
            "I finally booked {a_phrase} for {day} at {clock}, {reason}."],
            phrase=phrase, a_phrase=_a(phrase), day=_day(when), clock=clock, reason=rng.choice(reasons)))
        c.say("assistant", c.ack("health"))

    c.weave("health", [(1, booked)], budget)
    key = ("appt", kind)
    f = c.fact("appt", [key], [state["t"]])
    f.label_type, f.when = kind, when  # type: ignore[attr-defined]
    f.grouped("appointment", APPOINTMENT_LABELS[kind], [state["t"]])
    f.t_anchor = f"mentioned my {short} appointment"
    f.ask("single", "appt", f"When is my {short} appointment?", [state["t"]], [key], fresh_only=True)
    f.ask("paraphrase", "appt-para", list(paras), [state["t"]], [key], fresh_only=True)
    return True


def _ep_reading(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    title, author = u.take("book", BOOKS)
    state: dict[str, _Turn] = {}

    def reading() -> None:
        state["t"] = c.say("user", c.pick("book:1", [
            "I'm about a third of the way into {title} by {author}, and {op}.",
            "Currently reading {title} by {author}; {op}.",
            "I started {title} by {author} this week and {op}.",
            "My book at the moment is {title}, by {author}, and {op}."],
            title=title, author=author, op=u.take("read-op", READ_OPINIONS)))
        c.say("assistant", c.ack("books"))

    def decoy() -> None:
        other, _ = u.take("book", BOOKS)
        who = rng.choice(u.p["relatives"])
        c.ex(f"My {who['rel']} lent me {other}, but it's sitting on the shelf until I finish this one.",
             c.vary(c.pick("book:decoy-ack", ["A waiting pile is a nice problem to have. There's no rush with it.",
                                              "Lent books have a way of waiting patiently. Finish the current one first.",
                                              "Good to have the next one lined up, at least."]), [], ASSISTANT_FOLLOWUPS, 0, 0.3))

    blocks = [(1, reading)]
    if c.decoy(0.12):
        blocks.append((1, decoy, True))
    c.weave("books", blocks, budget)
    f = c.fact("book", [("book", title)], [state["t"]])
    f.grouped("book", title, [state["t"]], "Which book was I reading")
    f.ask("single", "book", f"What do I think of {title} so far?", [state["t"]], [("book", title)])
    return True


def _ep_film(c: _Conv, budget: int) -> bool:
    u = c.user
    film = u.take("film", FILMS)
    state: dict[str, _Turn] = {}

    def watched() -> None:
        state["t"] = c.say("user", c.pick("film:1", [
            "We watched {film} on {wd} night, and {op}.",
            "Finally saw {film} last night; {op}.",
            "Movie night was {film}, and {op}."],
            film=film, wd=WEEKDAYS[(c.day - timedelta(days=c.rng.randint(1, 3))).weekday()], op=c.rng.choice(FILM_OPINIONS)))
        c.say("assistant", c.ack("films"))

    c.weave("films", [(1, watched)], budget)
    f = c.fact("film", [("film", film)], [state["t"]])
    f.grouped("film", film, [state["t"]], "Which film had I just watched")
    f.ask("single", "film", f"What did I think of {film}?", [state["t"]], [("film", film)])
    return True


def _ep_gift(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    person = u.person("gift", partner=False)
    who = _who(person)
    pr = _pronouns(person["gender"])
    hobby, gift = person["hobby"]
    bday = c.day + timedelta(days=rng.randint(5, 25))
    amount = rng.choice([30, 40, 50, 60, 75, 80, 100, 120, 150]) * u.p["money_scale"]
    slots = {"who": who["text"], "name": person["name"], "rel": person["rel"], "hobby": hobby, "gift": gift,
             "nth": _ord(bday.day), "amt": amount, "cur": u.p["currency"], "wd": WEEKDAYS[(bday - timedelta(days=2)).weekday()],
             "whose": f"my {person['rel']}'s" if person["rel"] != "friend" else f"my friend {person['name']}'s", **pr}
    state: dict[str, _Turn] = {}

    def ask() -> None:
        state["u1"] = c.say("user", c.pick("gift:1", [
            "{who}'s birthday is on the {nth} and I have no idea what to get {her}; {she}'s really into {hobby}.",
            "It's {whose} birthday on the {nth} and I'm stuck for ideas. {she} loves {hobby}."], **slots))
        c.say("assistant", c.pick("gift:2", ["Happy to brainstorm with you. What's your budget, roughly?",
                                             "Fun problem to have. How much are you thinking of spending?",
                                             "Let's figure it out together. Is there a price limit you want to stay under?",
                                             "Good starting point. Before I suggest anything, what sort of budget are we talking?"]))
        state["u2"] = c.say("user", c.pick("gift:3", [
            "Around {amt} {cur}, maybe a bit more if it's something really special.",
            "No more than {amt} {cur}; money's a bit tight this month, to be honest."], **slots))
        c.say("assistant", c.reply("gift:4", ["That's plenty for something thoughtful. Let's think about what {she} already owns.",
                                             "Good, that gives us some room. Does {she} prefer things or experiences?"], **slots))

    def bought() -> None:
        state["u3"] = c.say("user", c.pick("gift:5", [
            "Sorted: I ordered {gift} for {whose} birthday, and it arrives on {wd}.",
            "I went with {gift} for {whose} birthday in the end."], **slots))
        c.say("assistant", c.ack("gift"))

    c.weave("gift", [(2, ask), (1, bought)], budget, {"hobby": hobby})
    key = ("gift", who["key"])
    f = c.fact("gift", [key, ("gift_para", who["para_key"])], [state["u1"], state["u2"], state["u3"]])
    f.t_anchor = f"was looking for a present for {who['q']}"
    f.answer = [state["u1"]]
    q = who["q"]
    her = pr["her"]
    f.ask("single", "gift-what", f"What did I get {q} for {pr['hers']} birthday?", [state["u3"]], [key])
    f.ask("single", "gift-when", f"When is {q}'s birthday?", [state["u1"]], [key])
    f.ask("multi", "gift-budget", f"How much did I want to spend on {q}'s birthday present?", [state["u1"], state["u2"]], [key])
    f.ask("multi", "gift-both", f"What is {q} into, and what did I buy {her} for {pr['hers']} birthday?",
          [state["u1"], state["u3"]], [key])
    qs = []
    for para in who["paras"]:
        qs += [f"What present did I pick out for my {para}?", f"What did I choose as a gift for my {para}?"]
    f.ask("paraphrase", "gift-para", qs, [state["u1"], state["u3"]], [("gift_para", who["para_key"])])
    return True


def _ep_budget(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    s = u.series.setdefault("budget", {"stage": 0, "last": -9})
    if s["stage"] >= 2 or c.index - s["last"] < 2:
        return False
    cur = u.p["currency"]
    state: dict[str, _Turn] = {}
    if s["stage"] == 0:
        s["goal"] = rng.choice([g for g in BUDGET_GOALS if u.p["partner"] or "our" not in g[0]])
        s["amt"] = rng.choice([150, 200, 250, 300, 400, 500]) * u.p["money_scale"]

        def block() -> None:
            state["t"] = c.say("user", c.pick("budget:1", [
                "I've decided to put {amt} {cur} a month aside for {goal}, starting this payday.",
                "New plan: {amt} {cur} goes into savings every month for {goal}."], amt=s["amt"], cur=cur, goal=s["goal"][0]))
            c.say("assistant", c.ack("money"))
    else:
        up = rng.random() < 0.5
        amt2 = s["amt"] + rng.choice([50, 100, 150]) * u.p["money_scale"] * (1 if up else -1)
        amt2 = amt2 if amt2 > 0 else s["amt"] + 100 * u.p["money_scale"]

        def block() -> None:
            if amt2 > s["amt"]:
                text = c.pick("budget:up", ["Update on the savings: I'm bumping it up to {amt} {cur} a month now that {why}.",
                                            "Good news, I can save {amt} {cur} a month from now on, because {why}."],
                              amt=amt2, cur=cur, why=rng.choice(["I got a small raise", "the car loan is finally paid off",
                                                                 "my flatmate is covering more of the bills"]))
            else:
                text = c.pick("budget:down", ["I have to drop the savings to {amt} {cur} a month for now, because {why}.",
                                              "Bad news on the savings front: only {amt} {cur} a month for a while, since {why}."],
                              amt=amt2, cur=cur, why=rng.choice(["the rent went up", "the boiler needs replacing",
                                                                 "the energy bills doubled"]))
            state["t"] = c.say("user", text)
            c.say("assistant", c.reply("budget:ack2", ["That makes sense. Adjusting the target as things change is part of any good plan.",
                                                      "Fair enough. A target you can actually keep up is better than an ambitious one you can't.",
                                                      "Sounds sensible. Let's update the monthly transfer so it happens automatically."]))

    c.weave("money", [(1, block)], budget)
    goal, goal_para = s["goal"]
    if s["stage"] == 0:
        f = c.fact("budget", [("budget",)], [state["t"]])
        f.ask("single", "budget", f"How much am I saving each month for {goal}?", [state["t"]], [("budget",)], fresh_only=True)
        s["fact"] = f
    else:
        first = s["fact"]
        first.stale = True
        f = c.fact("budget-change", [], [state["t"]])
        ev = [first.turns[0], state["t"]]
        f.ask("multi", "budget", f"How much am I saving each month for {goal} now?", ev)
        f.ask("temporal", "budget", "How much was I putting aside each month before I changed the amount?", ev)
        if goal_para:
            f.ask("paraphrase", "budget", [f"What sum do I currently stash away per paycheck toward {goal_para}?",
                                           f"What is my present regular deposit toward {goal_para}?"], ev)
    s["stage"], s["last"] = s["stage"] + 1, c.index
    return True


def _ep_language(c: _Conv, budget: int) -> bool:
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
        slots = {"lang": lang, "tutor": tutor, "wd": wd, **_pronouns(gender), "place": rng.choice(["Porto", "Osaka", "Naples", "Bremen", "Busan",
                                                                               "Madrid", "Thessaloniki", "Izmir", "Utrecht"])}

        def block() -> None:
            if not qa:
                t = c.say("user", c.pick("lang:1", [
                    "I've started {lang} lessons with a tutor called {tutor}, every {wd} evening.",
                    "New resolution: {lang} with a tutor named {tutor}, on {wd}s after work."], **slots))
                c.say("assistant", c.ack("language"))
                state["ev"] = [t]
            else:
                t1 = c.say("user", c.pick("lang:qa1", ["I finally signed up for {lang} lessons, something I've put off for years.",
                                                       "I've decided to learn {lang} properly this year, with a real teacher."], **slots))
                c.say("assistant", c.pick("lang:qa-a", ["Great choice! When are the lessons, and who is teaching you?",
                                                        "Good for you. What day are the classes, and who's the teacher?",
                                                        "That's exciting. When do you have them, and with whom?"]))
                t2 = c.say("user", c.pick("lang:qa2", ["{wd} evenings, with a tutor called {tutor} who grew up in {place}.",
                                                       "Every {wd} after work; the tutor is {tutor}, and {she}'s very patient."], **slots))
                c.say("assistant", c.ack("language"))
                state["ev"] = [t1, t2]

        c.weave("language", [(1 if not qa else 2, block)], budget, {"lang": lang})
        f = c.fact("language", [("lang",)], state["ev"])
        f.t_anchor = f"said I'd started {lang} lessons"
        f.answer = state["ev"][:1]
        if not qa:
            f.ask("single", "lang-tutor", f"Who teaches my {lang} lessons?", state["ev"], [("lang",)])
        else:
            f.ask("multi", "lang-qa", f"When are my {lang} lessons, and who teaches them?", state["ev"], [("lang",)])
        f.ask("paraphrase", "lang-para", ["On which weekday is my foreign-tongue class?",
                                          "Which night do I study that foreign tongue?",
                                          "What day of the week do I study that foreign tongue?"], state["ev"], [("lang",)])
    else:
        def block() -> None:
            state["t"] = c.say("user", c.pick("lang:2", [
                "My {lang} lesson was hard today, we spent the whole hour on {grammar}.",
                "Today's {lang} class was all about {grammar}, and my head hurts."], lang=lang, grammar=grammar))
            c.say("assistant", c.ack("language"))

        c.weave("language", [(1, block)], budget, {"lang": lang})
        f = c.fact("lang-lesson", [("lang-lesson",)], [state["t"]])
        f.ask("single", "lang-topic", f"What did we cover in my {lang} lesson?", [state["t"]], [("lang-lesson",)])
    s["stage"], s["last"] = s["stage"] + 1, c.index
    return True


def _ep_fitness(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    s = u.series.setdefault("fitness", {"injury": False})
    state: dict[str, _Turn] = {}
    if not s["injury"] and rng.random() < 0.35:
        part, cause = rng.choice(BODYPARTS), rng.choice(INJURY_CAUSES)

        def hurt() -> None:
            state["t"] = c.say("user", c.pick("fit:hurt", [
                "My {part} has been sore since {cause}, so I'm resting it this week.",
                "Annoyingly, my {part} has been bad ever since {cause}."], part=part, cause=cause))
            c.say("assistant", c.ack("fitness"))

        c.weave("fitness", [(1, hurt)], budget)
        s["injury"] = True
        f = c.fact("injury", [("injury",)], [state["t"]])
        f.t_anchor = f"complained about my {part}"
        f.answer = [state["t"]]
        f.ask("single", "injury", f"What did I say made my {part} sore?", [state["t"]], [("injury",)])
        f.ask("paraphrase", "injury", ["Which part of my body has been hurting, and what caused it?",
                                       "Where am I in pain at the moment, and why?"], [state["t"]], [("injury",)])
        return True
    race = u.take("race", RACES)
    when = c.day + timedelta(days=rng.randint(20, 70))

    def signup() -> None:
        state["t"] = c.say("user", c.pick("fit:race", [
            "I signed up for {race} on {date}, so training starts properly now.",
            "Done, I've entered {race}; it's on {date} and I'm already nervous.",
            "I've paid the entry fee for {race}, which is on {date}. No backing out now."], race=race, date=_date(when)))
        c.say("assistant", c.ack("fitness"))

    c.weave("fitness", [(1, signup)], budget)
    f = c.fact("race", [("race", race)], [state["t"]])
    f.grouped("race", race, [state["t"]])
    f.t_anchor = f"signed up for {race}"
    f.ask("single", "race", f"When is {race}?", [state["t"]], [("race", race)])
    return True


def _ep_work(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    state: dict[str, _Turn] = {}
    open_projects = [f for f in u.facts if f.kind == "project" and not f.stale and c.index - f.session >= 2
                     and f.deadline > c.day + timedelta(days=3)]  # type: ignore[attr-defined]
    if open_projects and rng.random() < (0.6 if u.hard else 0.35):
        orig = rng.choice(open_projects)
        project = orig.label
        when = orig.deadline + timedelta(days=rng.randint(7, 30))  # type: ignore[attr-defined]

        def slip() -> None:
            state["t"] = c.say("user", c.pick("work:slip", [
                "The deadline for {project} slipped to {date} because {why}.",
                "{project} is delayed: the new deadline is {date}, since {why}."],
                project=project, date=_date(when), why=rng.choice(SLIP_REASONS)))
            c.say("assistant", c.reply("work:slip-ack", ["That's a relief in some ways. More time usually means fewer late nights.",
                                                        "Annoying, but it gives you some breathing room. Worth updating the plan."]))

        c.weave("work", [(1, slip)], budget, {"project": project})
        orig.stale = True
        f = c.fact("project-slip", [], [state["t"]])
        ev = [orig.turns[0], state["t"]]
        f.ask("multi", "proj-deadline", f"When is the deadline for {project} now?", ev, [("proj", project)])
        return True
    project = u.take("project", u.p["job"]["projects"], unique=True)
    if project is None:
        return False
    when = c.day + timedelta(days=rng.randint(10, 45))
    colleague, gender = u.name()
    pr = _pronouns(gender)
    qa = rng.random() < 0.5

    def lead() -> None:
        state["u1"] = c.say("user", c.pick("work:1", [
            "At work I'm leading {project}, and the deadline is {date}.",
            "Work update: I have to get {project} finished by {date}, and it's mostly on me."], project=project, date=_date(when)))
        if qa:
            state["a"] = c.say("assistant", c.pick("work:2", ["That's a big one. Who else is working on {project} with you?",
                                                              "Sounds intense. Who's on {project} besides you?",
                                                              "Quite a deadline. Are you doing {project} alone, or is someone helping?"],
                                                   project=project))
            state["u2"] = c.say("user", c.pick("work:3", [
                "Mostly {name}, who joined from {company} last year; {she}'s sharp but stretched thin.",
                "Just {name}, really. {she} came over from {company} and knows the messy parts better than anyone."],
                name=colleague, company=rng.choice(COMPANIES), **pr))
        c.say("assistant", c.ack("work"))

    c.weave("work", [(2 if qa else 1, lead)], budget, {"project": project})
    f = c.fact("project", [("proj", project)], [state["u1"]] + ([state["u2"]] if qa else []))
    f.label = project
    f.deadline = when  # type: ignore[attr-defined]
    f.t_anchor = f"told you about the deadline for {project}"
    f.answer = [state["u1"]]
    f.ask("single", "proj-deadline", f"When is the deadline for {project}?", [state["u1"]], [("proj", project)], fresh_only=True)
    if qa:
        f.ask("multi", "proj-who", f"Who is working with me on {project}?", [state["a"], state["u2"]], [("proj", project)])
    return True


def _ep_weekend(c: _Conv, budget: int) -> bool:
    u, rng = c.user, c.rng
    act = u.take("weekend", WEEKEND_ACTS)
    state: dict[str, _Turn] = {}

    def plan() -> None:
        state["t"] = c.say("user", c.pick("wk:1", [
            "This weekend we're planning to {act}, if the weather holds.",
            "Plan for Saturday: {act}. I really need a day outside.",
            "We've decided to {act} this weekend, the first free one in ages."], act=act))
        c.say("assistant", c.ack("weekend"))

    def decoy() -> None:
        other = u.take("weekend", WEEKEND_ACTS)
        friend = rng.choice(u.p["friends"])["name"]
        c.ex(f"{friend} is going to {other} this weekend, which honestly sounds more fun than anything I've got on.",
             c.vary(c.pick("wk:decoy-ack", ["Ha, there's always next time. Maybe you could join them another weekend.",
                                            "It does sound fun. Maybe suggest doing it together some time.",
                                            "Fair enough! Your plan has its own charms, though."]), [], ASSISTANT_FOLLOWUPS, 0, 0.3))

    blocks = [(1, plan)]
    if c.decoy(0.15):
        blocks.insert(rng.randrange(2), (1, decoy, True))
    c.weave("weekend", blocks, budget)
    f = c.fact("weekend", [("weekend", act)], [state["t"]])
    f.grouped("weekend", act, [state["t"]], "What was I planning for the weekend")
    return True


def _ep_home(c: _Conv, budget: int) -> bool:
    u = c.user
    room = u.take("room", ROOMS, unique=True)
    if room is None:
        return False
    state: dict[str, _Turn] = {}

    def paint() -> None:
        state["t"] = c.say("user", c.pick("home:1", [
            "We're finally painting the {room} {colour} over the next few evenings.",
            "Decision made: the {room} is going {colour}, after about twenty sample pots."], room=room[0], colour=room[1]))
        c.say("assistant", c.ack("home"))

    c.weave("home", [(1, paint)], budget)
    f = c.fact("room", [("room", room[0])], [state["t"]])
    f.ask("single", "home", f"What colour are we painting the {room[0]}?", [state["t"]], [("room", room[0])])
    return True


EPISODES: dict[str, tuple[Callable[[_Conv, int], bool], float, float]] = {
    # name: (episode, weight, weight when hard)
    "trip": (_ep_trip, 2.5, 3.5),
    "conference": (_ep_conference, 0.8, 0.8),
    "visit": (_ep_visit, 1.6, 2.0),
    "mealprep": (_ep_mealprep, 1.2, 2.0),
    "restaurant": (_ep_restaurant, 2.0, 3.0),
    "pet": (_ep_pet, 1.8, 1.8),
    "move": (_ep_move, 1.4, 1.4),
    "health": (_ep_health, 1.8, 3.0),
    "reading": (_ep_reading, 2.0, 3.0),
    "film": (_ep_film, 1.2, 2.0),
    "gift": (_ep_gift, 1.3, 1.5),
    "budget": (_ep_budget, 1.2, 1.2),
    "language": (_ep_language, 1.2, 1.2),
    "fitness": (_ep_fitness, 1.3, 1.8),
    "work": (_ep_work, 1.8, 2.5),
    "weekend": (_ep_weekend, 2.0, 3.0),
    "home": (_ep_home, 0.6, 0.6),
}


# --------------------------------------------------------------------------------------------------
# Profile facts, each said once, in passing, at the start of some session.


def _profile_kinds(u: _User) -> list[str]:
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


def _profile(c: _Conv, kind: str) -> None:
    p, rng = c.user.p, c.rng
    if kind == "job":
        title, employer = p["job"]["title"], p["job"]["employer"]
        t = c.say("user", c.pick("prof:job", [
            "Long day. Being {title} at {employer} is rewarding, but this month has been a lot.",
            "Quick one before I start: I work as {title} at {employer}, so my mornings are hectic."],
            title=_a(title), employer=employer))
        single, paras = "Where do I work, and what is my job?", ["What do I do for a living?", "What's my occupation?",
                                                                 "What is my line of employment?"]
    elif kind == "allergy":
        t = c.say("user", c.pick("prof:allergy", [
            "Just so you know, I'm allergic to {a}, so please keep it out of anything you suggest.",
            "Reminder for any recipes: I'm allergic to {a}, and even a little makes me ill."], a=p["allergy"][0]))
        single, paras = "What am I allergic to?", ["Which food gives me a bad reaction?",
                                                   "Is there an ingredient my body can't tolerate?"]
    elif kind == "diet":
        diet, _tags, detail = p["diet"]
        t = c.say("user", c.pick("prof:diet", [
            "For the record, I've been {diet} for about {n} years now, so {detail}.",
            "Remember I'm {diet}, and have been for roughly {n} years, so {detail}."], diet=diet, n=rng.randint(2, 15),
            detail=detail))
        single, paras = f"How long have I been {diet}?", ["How long ago did I change my eating habits?",
                                                          "Since when have I followed my current eating pattern?"]
    elif kind == "hometown":
        t = c.say("user", c.pick("prof:town", [
            "This reminds me of {town}, where I grew up; {detail}.",
            "Back in {town}, where I spent my whole childhood, {detail}."], town=p["hometown"], detail=p["hometown_detail"]))
        single, paras = "Which town did I grow up in?", ["Where was I raised?", "Which place was I brought up in as a kid?",
                                                          "Where did I live when young?"]
    elif kind == "instrument":
        t = c.say("user", c.pick("prof:inst", [
            "I've been learning the {inst} since {month}, and my neighbours are being very patient.",
            "Practising the {inst} every evening now; I only started back in {month}."],
            inst=p["instrument"], month=MONTHS[(c.day - timedelta(days=rng.randint(40, 150))).month - 1]))
        single, paras = "Which instrument am I learning?", ["What have I been playing musically, and since when?",
                                                            "What am I teaching myself to play?"]
    elif kind == "partner":
        partner = p["partner"]
        pr = _pronouns(partner["gender"])
        t = c.say("user", c.pick("prof:partner", [
            "My partner {name} is {job}, so {she} {detail}.",
            "{name}, my partner, {detail}; {she}'s {job}, so our schedules never match."],
            name=partner["name"], job=partner["job"], detail=partner["detail"], **pr))
        single = "What does my partner do for work?"
        paras = [q for para in PARTNER_PARAS for q in (f"What's my {para}'s occupation?", f"What does my {para} do for a living?")]
    else:
        verb, n, rest = p["commute"]
        t = c.say("user", f"I {verb} about {n} {rest}.")
        single = {"cycle": "How far do I cycle to work?", "walk": "How far do I walk to the office?",
                  "run": "How far do I run home from work?"}[verb]
        paras = {"cycle": ["What distance is my daily bike ride to the office?", "How long is my daily bike ride?"],
                 "walk": ["What distance do I cover on foot to my workplace?", "How long is my stroll to my job?"],
                 "run": ["What distance do I jog back to my house after my job?", "How long is my jog back after my job?"]}[verb]
    c.say("assistant", c.ack("profile"))
    f = c.fact(kind, [(kind,)], [t])
    f.ask("single", "profile-" + kind, single, [t], [(kind,)])
    f.ask("paraphrase", "profile-" + kind, paras, [t], [(kind,)])


# --------------------------------------------------------------------------------------------------
# Sessions.

_TIME_WORDS = {"morning": range(5, 12), "coffee": range(5, 12), "awake since five": range(5, 10), "lunch": range(11, 15),
               "afternoon": range(12, 18), "evening": range(17, 24), "dinner": range(15, 21), "sleep": range(20, 24),
               "kids are finally asleep": range(19, 24), "log off": range(19, 24), "good morning": range(5, 12),
               "work done": range(6, 17), "tonight": range(12, 24), "tomorrow": range(12, 24),
               "couldn't sleep": range(0, 7)}


def _fits_hour(text: str, hour: int) -> bool:
    lowered = text.lower()
    return all(hour in hours for word, hours in _TIME_WORDS.items() if word in lowered)


def _write_session(u: _User, index: int, start: datetime, profile_kind: str | None, last_kinds: list[str]) -> list[str]:
    rng = u.rng
    c = _Conv(u, index, start)
    exchanges = rng.randint(7, 10)
    if profile_kind:
        _profile(c, profile_kind)
    elif rng.random() < 0.5:
        hour = start.hour
        c.ex(u.tpl("open1", [g for g in OPEN_GREETINGS if _fits_hour(g, hour)]) + " "
             + u.tpl("open2", [o for o in OPEN_CONTEXTS if _fits_hour(o, hour)]), u.tpl("open3", OPEN_REPLIES))
    closer = rng.random() < 0.6
    two = rng.random() < (0.55 if u.hard else 0.4) and exchanges - closer - len(c.turns) // 2 >= 6
    kinds: list[str] = []
    for round_ in range(2 if two else 1):
        room = exchanges - closer - len(c.turns) // 2
        if round_ == 1 and room < 3:
            break
        budget = room if round_ == 1 or not two else room // 2 + rng.randint(0, 1)
        names = [k for k in EPISODES if k not in kinds and k not in last_kinds]
        weights = [EPISODES[k][2 if u.hard else 1] for k in names]
        while names:
            k = rng.choices(names, weights)[0]
            i = names.index(k)
            del names[i], weights[i]
            if EPISODES[k][0](c, max(2, budget)):
                kinds.append(k)
                break
    while len(c.turns) // 2 + closer < 5:
        c.fill("generic")
    if closer:
        hour = start.hour
        leaving = u.tpl("close2", [o for o in CLOSE_LEAVING if _fits_hour(o, hour)])
        wishes = [w for w in CLOSE_WISHES if _fits_hour(w, hour) and ("sleep" in w.lower()) == ("sleep" in leaving)]
        c.ex(u.tpl("close1", CLOSE_THANKS) + " " + leaving, u.tpl("close3", CLOSE_REPLIES) + " " + u.tpl("close4", wishes or CLOSE_WISHES))
    moment = start
    for number, turn in enumerate(c.turns, start=1):
        turn.id = f"s{index:0{u.width}d}-t{number:02d}"
        turn.at = moment
        moment += timedelta(seconds=rng.randint(25, 190))
    u.sessions.append(c.turns)
    u.facts.extend(c.facts)
    return kinds


# --------------------------------------------------------------------------------------------------
# Questions.

GROUP_QUESTIONS: dict[str, dict[str, Any]] = {
    "trip": {"latest": "Which trip did I plan most recently?", "first": "What was the first trip I told you I was planning?",
             "order": "Which trip did I tell you about first, {a} or {b}?", "agg": "Which places have I planned trips to so far?"},
    "restaurant": {"latest": "Which restaurant did I most recently tell you we'd been to?",
                   "first": "What was the first restaurant I told you we'd been to?",
                   "order": "Which restaurant did I mention first, {a} or {b}?"},
    "book": {"latest": "Which book did I most recently tell you I was reading?", "first": "What was the first book I told you I was reading?",
             "order": "Which book did I mention first, {a} or {b}?", "window": "What book did I tell you I was reading {w}?",
             "para_window": ["Which volume did I mention being partway into {w}?", "What did I say was on my bedside table {w}?"],
             "agg": "Which books have I told you I was reading?"},
    "film": {"latest": "Which film did I say I watched most recently?", "order": "Which did I watch first, {a} or {b}?"},
    "weekend": {"latest": "What did I plan most recently for the weekend?", "window": "What weekend plans did I tell you about {w}?",
                "para_window": ["How did I say I intended to spend my days off {w}?",
                                "What did I say I was going to do on my days off {w}?"]},
    "dish": {"latest": "What was the last dish I told you I was making?", "window": "What did I say I was cooking {w}?"},
    "race": {"order": "Which race did I sign up for first, {a} or {b}?", "latest": "Which race did I enter most recently?"},
    "appointment": {"order": "Which did I mention first, {a} or {b}?"},
}


def _resolve(u: _User, cand: dict[str, Any]) -> str | None:
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


def _group_candidates(u: _User, keycount: dict[tuple, int]) -> list[dict[str, Any]]:
    rng = u.rng
    out: list[dict[str, Any]] = []

    def add(category: str, tag: str, questions, evidence: list[_Turn]) -> None:
        out.append({"category": category, "tag": tag, "questions": [questions] if isinstance(questions, str) else questions,
                    "evidence": evidence, "keys": (), "fresh_only": False, "fact": None})

    groups: dict[str, list[_Fact]] = {}
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
        windows: dict[str, list[_Fact]] = {}
        for f in facts:
            windows.setdefault(_window(f.day), []).append(f)
        if "window" in spec and len(facts) >= 2:
            for window, inside in windows.items():
                if len(inside) == 1:
                    add("temporal", group + "-window", spec["window"].format(w=window), inside[0].answer)
                    if "para_window" in spec:
                        add("paraphrase", group + "-window", [q.format(w=window) for q in spec["para_window"]], inside[0].answer)
    by_session: dict[int, list[_Fact]] = {}
    for f in u.facts:
        by_session.setdefault(f.session, []).append(f)
    for facts in by_session.values():
        anchors = [f for f in facts if f.t_anchor and not f.stale and f.keys and keycount[f.keys[0]] == 1]
        askable = [f for f in facts if f.t_ask and sum(1 for g in facts if g.group == f.group) == 1]
        for anchor in anchors:
            for answer in askable:
                if answer is not anchor:
                    add("temporal", "sameday-" + (answer.group or ""), f"{answer.t_ask} on the day I {anchor.t_anchor}?",
                        anchor.answer + answer.answer)
    return out


def _questions(u: _User) -> list[tuple[str, str, list[_Turn]]]:
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
    chosen: list[tuple[str, str, list[_Turn]]] = []
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


# --------------------------------------------------------------------------------------------------
# The dataset.


def _parse_start(start: str) -> datetime:
    moment = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def generate_conversations(users: int = 6, sessions_per_user: int = 20, seed: int = 11,
                           start: str = "2026-03-02T09:00:00Z", hard: bool = False) -> list[dict[str, Any]]:
    """Memory records (every user's turns, in time order) then question records; the same arguments
    give the same records."""
    master = random.Random(seed)
    first = _parse_start(start)
    names = master.sample(USER_NAMES, min(users, len(USER_NAMES)))
    while len(names) < users:
        names.append(f"{USER_NAMES[len(names) % len(USER_NAMES)]}{len(names) // len(USER_NAMES) + 1}")
    memories: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    for name in names:
        uid = f"user-{name.lower()}"
        u = _User(random.Random(master.getrandbits(64)), uid, name, hard)
        u.width = max(2, len(str(sessions_per_user)))  # type: ignore[attr-defined]
        rng = u.rng
        kinds = _profile_kinds(u)
        rng.shuffle(kinds)
        slots = rng.sample(range(sessions_per_user), min(len(kinds), sessions_per_user))
        profile_at = dict(zip(slots, kinds))
        day = first
        last: list[str] = []
        for index in range(1, sessions_per_user + 1):
            if index > 1:
                day = (day + timedelta(days=rng.randint(1, 4))).replace(hour=rng.randint(7, 22), minute=rng.randint(0, 59))
            last = _write_session(u, index, day, profile_at.get(index - 1), last)
        for turns in u.sessions:
            for turn in turns:
                memories.append({"kind": "memory", "id": turn.id, "user_id": uid, "session_id": f"{uid}-s{turn.session:0{u.width}d}",
                                 "created_at": _timestamp(turn.at), "text": turn.text, "speaker": turn.speaker})
        asked = u.sessions[-1][-1].at + timedelta(days=1, hours=rng.randint(0, 10))
        for number, (category, question, evidence) in enumerate(_questions(u), start=1):
            questions.append({"kind": "question", "id": f"{uid}-q{number:02d}", "user_id": uid, "question": question,
                              "evidence": [t.id for t in evidence], "asked_at": _timestamp(asked + timedelta(minutes=number)),
                              "category": category})
    return memories + questions


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> None:
    """One JSON object a line, keys sorted, UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as stream:
        for record in records:
            stream.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write_jsonl(generate_conversations(**DEFAULT_ARGS), DEFAULT_PATH)
    write_jsonl(generate_conversations(**HARD_ARGS), HARD_PATH)
    print(f"wrote {DEFAULT_PATH} and {HARD_PATH}")
