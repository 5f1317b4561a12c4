"""A synthetic, span-annotated PII corpus for evaluating scrubbers.

Support-style messages built from templates, with Faker values in several locales, names in
odd cases and addresses in several formats. Each record is
``{"full_text": ..., "spans": [{"entity_type", "start_position", "end_position"}]}`` — the
format ``tutorloop privacy eval`` reads. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_IE")

# {SLOT} names are entity types; a slot may appear once per template.
TEMPLATES = (
    "Hi, this is {PERSON}. My card ending in the number {CREDIT_CARD} was stolen yesterday.",
    "my name is {PERSON} and i can't log in, my email is {EMAIL_ADDRESS}",
    "Please send the replacement card to {STREET_ADDRESS}, {POSTCODE} {LOCATION}.",
    "Can you call me back on {PHONE_NUMBER}? It's about a transfer that never arrived.",
    "I want to send money to my friend {PERSON}, her IBAN is {IBAN_CODE}",
    "Regards, {PERSON}",
    "Hello, I am {AGE} years old, can I open an account for my son?",
    "My SSN is {US_SSN}, why do you need it for verification?",
    "Login attempts from {IP_ADDRESS} were not me!!",
    "I moved to {STREET_ADDRESS} in {LOCATION}, how do I update my address?",
    "Dear support, {PERSON} here. Contact me at {EMAIL_ADDRESS} or {PHONE_NUMBER}.",
    "The payment to {IBAN_CODE} is still pending, what's going on",
    "Dr. {PERSON} needs a new PIN for the card {CREDIT_CARD}",
    "Mr. {PERSON} would like to close his account",
    "my husband {PERSON} lost his card in {LOCATION}",
    "Delivery address: {STREET_ADDRESS}, {LOCATION} {POSTCODE}",
    "zip code {POSTCODE}, city {LOCATION}, is that enough for the card delivery?",
    "THIS IS {PERSON}, CALL ME AT {PHONE_NUMBER} IMMEDIATELY",
    "why was my transfer to {PERSON} declined? i have the money",
    "Card {CREDIT_CARD} was charged twice at the shop, please refund",
    "I'm {AGE}, can I still get a credit card?",
    "my email changed to {EMAIL_ADDRESS}, please update it",
    "Cheers, {PERSON}",
    "Someone in {LOCATION} used my card, I live at {STREET_ADDRESS}",
    "I need a statement sent to {PERSON}, {STREET_ADDRESS}, {POSTCODE}",
    "phone {PHONE_NUMBER} email {EMAIL_ADDRESS} name {PERSON}",
    "Why is my top up still pending? ref {IBAN_CODE}",
    "I was in {LOCATION} last week and the ATM kept my card",
    "Signed, {PERSON}, aged {AGE}",
    "the new phone number is {PHONE_NUMBER}",
    "My date of birth is {DATE_OF_BIRTH}, do you need it to reset my PIN?",
    "born {DATE_OF_BIRTH} - please verify me, the app keeps failing",
    "Driver's license number {US_DRIVER_LICENSE} was rejected at verification",
    "my DL is {US_DRIVER_LICENSE}, can I use it instead of a passport?",
    "There was a login from {IP_ADDRESS} that I do not recognise",
    "As a {NRP} I cannot pay interest, which account should I choose?",
    "I work at {ORGANIZATION} and my salary did not arrive this month",
    "{TITLE} {PERSON} would like to order a new card",
    "I turned {AGE} last week, can I get a credit card now?",
)

_SLOT = re.compile(r"\{([A-Z_]+)\}")
_DATE_FORMATS = ("%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d", "%d %B %Y", "%B %d, %Y", "%d.%m.%Y")
# California, Florida, New York and Texas licence numbers: {0} a letter, {1}.. digits.
_LICENCE_FORMATS = (
    "{0}{1}{2}{3}{4}{5}{6}{7}",
    "{0}{1}{2}{3}-{4}{5}{6}-{7}{8}-{9}{10}{11}-{12}",
    "{1}{2}{3} {4}{5}{6} {7}{8}{9}",
    "{1}{2}{3}{4}{5}{6}{7}{8}",
)
_GROUPS = ("Muslim", "Catholic", "Hindu", "Sikh", "Christian", "Buddhist", "Nigerian",
           "Pakistani", "Ghanaian")  # fmt: skip


# Slots every split fills the same way: straight from the locale's Faker provider.
_FAKER_SLOTS = {"ORGANIZATION": "company", "STREET_ADDRESS": "street_address",
                "POSTCODE": "postcode", "LOCATION": "city"}  # fmt: skip


def faker_slot(fake: Any, entity: str) -> str | None:
    """The locale's own value for a place or company slot; None for other slots."""
    method = _FAKER_SLOTS.get(entity)
    return None if method is None else str(getattr(fake, method)())


def _value(fake: Any, us: Any, entity: str, rng: random.Random) -> str:
    plain = faker_slot(fake, entity)
    if plain is not None:
        return plain
    if entity == "PERSON":
        name = str(fake.name())
        return rng.choice([name, name, name.lower(), name.upper()])
    if entity == "EMAIL_ADDRESS":
        return str(fake.email())
    if entity == "PHONE_NUMBER":
        return str(fake.phone_number())
    if entity == "CREDIT_CARD":
        return str(fake.credit_card_number())
    if entity == "IBAN_CODE":
        iban = str(fake.iban())
        return (
            " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
            if rng.random() < 0.5
            else iban
        )
    if entity == "US_SSN":
        return str(us.unique.ssn())
    if entity == "IP_ADDRESS":
        return str(fake.ipv4() if rng.random() < 0.5 else fake.ipv6())
    if entity == "DATE_OF_BIRTH":
        born = fake.date_of_birth(minimum_age=18, maximum_age=90)
        return str(born.strftime(rng.choice(_DATE_FORMATS)))
    if entity == "US_DRIVER_LICENSE":
        return rng.choice(_LICENCE_FORMATS).format(
            *(rng.choice("ABCDEFGHJKLMNPRSTWY") for _ in range(1)),
            *(str(rng.randint(0, 9)) for _ in range(12)),
        )
    if entity == "NRP":
        return rng.choice(_GROUPS)
    if entity == "TITLE":
        return rng.choice(["Mr", "Mrs", "Ms", "Dr.", "Prof."])
    if entity == "AGE":
        return str(rng.randint(18, 95))
    raise ValueError(f"unknown slot {entity}")


def generate(n: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` annotated records."""
    return build_records(TEMPLATES, LOCALES, _value, n, seed)


ValueFn = Callable[[Any, Any, str, random.Random], str]


def build_records(
    templates: Sequence[str], locales: Sequence[str], value: ValueFn, n: int, seed: int
) -> list[dict[str, Any]]:
    """Fill ``{SLOT}`` templates with ``value(fake, us_fake, entity, rng)``, recording spans.

    Shared by the development and the held-out splits (their templates, locales and values
    are their own); deterministic for a given seed.
    """
    from faker import Faker

    rng = random.Random(seed)
    fakers = {}
    for locale in [*locales, "en_US"]:
        fake = Faker(locale)
        fake.seed_instance(seed)
        # Some Faker locales (it_IT) build their city list from a set, so its order — and
        # the corpus — would change with PYTHONHASHSEED. Sorting makes the corpus reproducible.
        for provider in fake.get_providers():
            cities = getattr(provider, "cities", None)
            if isinstance(cities, list):
                provider.cities = sorted(cities)
        fakers[locale] = fake
    us = fakers["en_US"]
    records = []
    for _ in range(n):
        template = rng.choice(templates)
        fake = fakers[rng.choice(locales)]
        text, spans, cursor = "", [], 0
        for match in _SLOT.finditer(template):
            text += template[cursor : match.start()]
            entity = match.group(1)
            filled = " ".join(value(fake, us, entity, rng).split())
            spans.append({"entity_type": entity, "start_position": len(text),
                          "end_position": len(text) + len(filled)})  # fmt: skip
            text += filled
            cursor = match.end()
        text += template[cursor:]
        records.append({"full_text": text, "spans": spans})
    return records
