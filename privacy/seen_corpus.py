"""The first held-out PII corpus, retired: measured once blind, then its misses were read.

Written as the held-out split on 2026-12-02: its own templates (forms, chat, e-mail
signatures, several entities per message), its own Faker locales (Australia, Canada, New
Zealand, India, Sweden, Denmark, Poland, Czechia) and its own value formats (E.164 and dotted
phone numbers, dashed card numbers, unseparated SSNs, lower-case IBANs, IPv6 in full and
compressed forms, dates of birth as "3rd of March 1985" or "1985/03/12", names written "Last,
First", honorifics such as "Mx" or "Professor"). Its first measurement was blind (BENCHMARKS.md);
its misses were then read, so rules written since may have been shaped by it. It is reported
as a second development split; :mod:`privacy.heldout_corpus` is the held-out split now.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tutorloop.privacy.eval_corpus import build_records, faker_slot

LOCALES = ("en_AU", "en_CA", "en_NZ", "en_IN", "sv_SE", "da_DK", "pl_PL", "cs_CZ")

TEMPLATES = (
    "Full name: {PERSON}\nDOB: {DATE_OF_BIRTH}\nPhone: {PHONE_NUMBER}",
    "hey its {PERSON} again, still waiting on the refund to card {CREDIT_CARD}",
    "Kind regards,\n{PERSON}\n{PHONE_NUMBER}",
    "I'm {NRP} and moved here for work at {ORGANIZATION}, can I open an account?",
    "Transfer to {IBAN_CODE} under the name {PERSON}, please confirm",
    "{TITLE} {PERSON}, {STREET_ADDRESS}, {LOCATION} {POSTCODE}",
    "my ssn {US_SSN} and license # {US_DRIVER_LICENSE} for the verification step",
    "Someone logged in from {IP_ADDRESS} and changed my email to {EMAIL_ADDRESS}!!",
    "Is a {AGE} y/o allowed to have their own debit card? asking for my kid",
    "please post the statement to: {STREET_ADDRESS}\n{POSTCODE} {LOCATION}",
    "{PERSON} ({EMAIL_ADDRESS}) reported the card lost near {LOCATION}",
    "My employer {ORGANIZATION} pays on the 25th but nothing came in",
    "Can I add my partner {PERSON}, born {DATE_OF_BIRTH}, as a second card holder?",
    "Contact: {PHONE_NUMBER} (mobile), {EMAIL_ADDRESS} (work)",
    "Account holder {PERSON}, aged {AGE}, lives at {STREET_ADDRESS}",
    "the ATM at {LOCATION} swallowed card {CREDIT_CARD} - what now",
    "Verification: {TITLE} {PERSON}, date of birth {DATE_OF_BIRTH}",
    "I'm a {NRP} student, do I need a local address for the card?",
    "Why was my payment blocked? ip was {IP_ADDRESS}, phone {PHONE_NUMBER}",
    "IBAN: {IBAN_CODE}\nBIC: NDEASESS\nBeneficiary: {PERSON}",
)

_TITLES = ("Mx", "Professor", "Sir", "Miss", "Mrs.", "Dr")
_GROUPS = ("Brazilian", "Vietnamese", "Kenyan", "Jewish", "Orthodox Christian", "Sikh",
           "Filipino", "Protestant")  # fmt: skip


def _phone(fake: Any, rng: random.Random) -> str:
    digits = "".join(c for c in str(fake.phone_number()) if c.isdigit())[-9:].rjust(9, "4")
    style = rng.randrange(4)
    if style == 0:
        return f"+{rng.choice(['61', '1', '64', '46', '45', '48'])}{digits}"
    if style == 1:  # North American, dotted
        return f"{rng.randrange(201, 989)}.{digits[:3]}.{digits[3:7]}"
    if style == 2:
        return f"(0{digits[0]}) {digits[1:5]} {digits[5:]}"
    return str(fake.phone_number())


def _dob(fake: Any, rng: random.Random) -> str:
    born = fake.date_of_birth(minimum_age=18, maximum_age=90)
    day = born.day
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return rng.choice(
        [
            f"{day}{suffix} of {born:%B %Y}",
            f"{born:%Y/%m/%d}",
            f"{born:%d-%b-%Y}",
            f"{born:%b %d %Y}",
        ]
    )


def _value(fake: Any, us: Any, entity: str, rng: random.Random) -> str:
    plain = faker_slot(fake, entity)
    if plain is not None:
        return plain
    if entity == "PERSON":
        first, last = str(fake.first_name()), str(fake.last_name())
        return rng.choice([f"{first} {last}", f"{last}, {first}", first.lower() + " " + last])
    if entity == "PHONE_NUMBER":
        return _phone(fake, rng)
    if entity == "CREDIT_CARD":
        number = str(us.credit_card_number(card_type=rng.choice(["visa16", "mastercard"])))
        return "-".join(number[i : i + 4] for i in range(0, len(number), 4))
    if entity == "IBAN_CODE":
        iban = str(fake.iban()) if hasattr(fake, "iban") else str(us.iban())
        return iban.lower() if rng.random() < 0.3 else iban
    if entity == "US_SSN":
        return str(us.ssn()).replace("-", "") if rng.random() < 0.5 else str(us.ssn())
    if entity == "US_DRIVER_LICENSE":
        letter = rng.choice("BDGKMPSW")
        return rng.choice(
            [
                f"{letter}{rng.randrange(10**6, 10**7)}",
                f"{rng.randrange(10**7, 10**8)}",
                f"{letter}{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
            ]
        )
    if entity == "IP_ADDRESS":
        address = str(us.ipv6())
        return address if rng.random() < 0.5 else re.sub(r"(^|:)0+(?=[0-9a-f])", r"\1", address)
    if entity == "EMAIL_ADDRESS":
        email = str(fake.email())
        return email.upper() if rng.random() < 0.2 else email
    if entity == "DATE_OF_BIRTH":
        return _dob(fake, rng)
    if entity == "AGE":
        return str(rng.randint(11, 17) if rng.random() < 0.5 else rng.randint(18, 80))
    if entity == "NRP":
        return rng.choice(_GROUPS)
    if entity == "TITLE":
        return rng.choice(_TITLES)
    raise ValueError(f"unknown slot {entity}")


def generate(n: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` annotated records, in the format of :func:`privacy.eval_corpus.generate`."""
    return build_records(TEMPLATES, LOCALES, _value, n, seed)
