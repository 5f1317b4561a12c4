"""The held-out PII corpus: text the scrubber's rules were NOT written against.

:mod:`privacy.eval_corpus` is the development split (templates, locales and value formats the
recognizers were tuned on). :mod:`privacy.seen_corpus` was the first held-out split: its misses
were read after it was measured, so it is no longer blind and now counts as development text.
This module is the second held-out split, written on 2026-12-03 before the rule changes that
followed the first one's report, and measured once afterwards: its own templates (tickets,
voice-call transcripts, app feedback, forwarded forms), its own Faker locales (Brazil, Portugal,
Finland, Norway, Hungary, Romania, Austria, Slovakia, French Canada, Mexico; none shared with
the other two splits) and its own value formats (space-grouped cards and SSNs, phone numbers in
the locale's own and in international form, dates of birth such as "12 Mar 1985", "12/3/85" or
"1985.03.12", ages such as "41yo" or "age: 41", licence numbers of Illinois, New Jersey,
Pennsylvania, Michigan and Ohio, names as initials or "Last First").

Rule: nobody tunes a recognizer against this file. A rule change is judged on the development
splits (and Banking77's train split for false positives); this split is measured afterwards
and its numbers are reported as they come (BENCHMARKS.md), misses included.
"""

from __future__ import annotations

import random
from typing import Any

from tutorloop.privacy.eval_corpus import build_records, faker_slot

LOCALES = ("pt_BR", "pt_PT", "fi_FI", "no_NO", "hu_HU", "ro_RO", "de_AT", "sk_SK", "fr_CA",
           "es_MX")  # fmt: skip

TEMPLATES = (
    "Ticket from {PERSON}: card {CREDIT_CARD} declined at every shop since Monday",
    "[call transcript] customer gave her name as {PERSON}, date of birth {DATE_OF_BIRTH}, "
    "callback {PHONE_NUMBER}",
    "app feedback: terrible, locked out again. {EMAIL_ADDRESS}",
    "Forwarded form -- Name: {PERSON} / Address: {STREET_ADDRESS}, {POSTCODE} {LOCATION} / "
    "Tel: {PHONE_NUMBER}",
    "hello my son is {AGE} and wants his own card, what documents do you need?",
    "I changed jobs, my new employer is {ORGANIZATION}, salary goes to {IBAN_CODE} now",
    "{TITLE} {PERSON} called about a refund that was promised two weeks ago",
    "SSN {US_SSN}, DL {US_DRIVER_LICENSE}, what else does the app want from me",
    "we are a {NRP} family and need an account without interest, any options?",
    "new address is {STREET_ADDRESS}, {LOCATION}, {POSTCODE} - please update before the card ships",
    "suspicious login from {IP_ADDRESS} at 3am, I was asleep",
    "customer {PERSON}, {AGE}yo, asks why the exchange rate was so bad",
    "Please reissue the card to {TITLE} {PERSON} at {STREET_ADDRESS}",
    "Beneficiary {PERSON}, account {IBAN_CODE}, reference rent march",
    "my DOB is {DATE_OF_BIRTH} but the app says I'm under 18??",
    "Text me at {PHONE_NUMBER}, I can't take calls at work ({ORGANIZATION})",
    "age: {AGE} / nationality: {NRP} / city: {LOCATION}",
    "Dear team, I live in {LOCATION} and cannot find an ATM that takes my card. {PERSON}",
    "The transfer from {EMAIL_ADDRESS} to my account never showed up, card {CREDIT_CARD}",
    "router ip {IP_ADDRESS} got blocked by your app, I am not a bot",
    "Postal address: {STREET_ADDRESS}\n{POSTCODE} {LOCATION}\nThanks",
    "Thanks a lot!\n-- {PERSON}\n{ORGANIZATION}",
)

_TITLES = ("Mr.", "Mrs", "Dr", "Prof", "Rev.", "Capt.", "Mme", "Sra.")
_GROUPS = ("Romanian", "Hungarian", "Lutheran", "Greek Orthodox", "Hindu", "Moroccan",
           "Baptist", "Portuguese", "Muslim")  # fmt: skip
_DOB_FORMATS = ("%d %b %Y", "%B %d %Y", "%Y.%m.%d", "%d-%m-%Y")


def _dob(fake: Any, rng: random.Random) -> str:
    born = fake.date_of_birth(minimum_age=18, maximum_age=90)
    if rng.random() < 0.2:  # day/month without leading zeros and a two-digit year
        return f"{born.day}/{born.month}/{born:%y}"
    return str(born.strftime(rng.choice(_DOB_FORMATS)))


def _licence(rng: random.Random) -> str:
    letter = rng.choice("ABCDEFGHJKLMNPRSTWZ")

    def digits(k: int) -> str:
        return "".join(str(rng.randrange(10)) for _ in range(k))

    return rng.choice(
        [
            f"{letter}{digits(3)}-{digits(4)}-{digits(4)}",  # Illinois
            f"{letter}{digits(4)} {digits(5)} {digits(5)}",  # New Jersey
            f"{digits(2)} {digits(3)} {digits(3)}",  # Pennsylvania
            f"{letter} {digits(3)} {digits(3)} {digits(3)} {digits(3)}",  # Michigan
            f"{letter}{rng.choice('ABCDEFGHJKLMNPRSTWZ')}{digits(6)}",  # Ohio
        ]
    )


def _person(fake: Any, rng: random.Random) -> str:
    first, last = str(fake.first_name()), str(fake.last_name())
    return rng.choice([f"{first} {last}", f"{first[0]}. {last}", f"{last} {first}",
                       f"{first} {last}".upper(), str(fake.name())])  # fmt: skip


def _value(fake: Any, us: Any, entity: str, rng: random.Random) -> str:
    plain = faker_slot(fake, entity)
    if plain is not None:
        return plain
    if entity == "PERSON":
        return _person(fake, rng)
    if entity == "PHONE_NUMBER":
        phone = str(fake.phone_number())
        digits = "".join(c for c in phone if c.isdigit())
        if rng.random() < 0.3 and len(digits) >= 9:
            code = rng.choice(["55", "351", "358", "47", "36", "40", "43", "421", "1", "52"])
            return f"+{code} {digits[-9:-6]} {digits[-6:-3]} {digits[-3:]}"
        return phone
    if entity == "CREDIT_CARD":
        number = str(us.credit_card_number(card_type=rng.choice(["visa16", "mastercard"])))
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    if entity == "IBAN_CODE":
        iban = str(fake.iban())
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)).lower() if (
            rng.random() < 0.25) else iban  # fmt: skip
    if entity == "US_SSN":
        return str(us.ssn()).replace("-", " ")
    if entity == "US_DRIVER_LICENSE":
        return _licence(rng)
    if entity == "IP_ADDRESS":
        return str(us.ipv4_public() if rng.random() < 0.5 else us.ipv6())
    if entity == "EMAIL_ADDRESS":
        return str(fake.email())
    if entity == "DATE_OF_BIRTH":
        return _dob(fake, rng)
    if entity == "AGE":
        return str(rng.randint(10, 17) if rng.random() < 0.4 else rng.randint(18, 85))
    if entity == "NRP":
        return rng.choice(_GROUPS)
    if entity == "TITLE":
        return rng.choice(_TITLES)
    raise ValueError(f"unknown slot {entity}")


def generate(n: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` annotated records, in the format of :func:`privacy.eval_corpus.generate`."""
    return build_records(TEMPLATES, LOCALES, _value, n, seed)
