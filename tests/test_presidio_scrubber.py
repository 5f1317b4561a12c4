"""The full scrubber with the real spaCy model from PyPI (loaded once for the module)."""

from __future__ import annotations

import pytest

from tutorloop.privacy.presidio_scrubber import PresidioScrubber
from tutorloop.privacy.scrubber import RegexScrubber


@pytest.fixture(scope="module")
def scrubber() -> PresidioScrubber:
    return PresidioScrubber()


CASES = [
    ("Hi, this is Jonathan Whitfield from Leeds", ["Jonathan Whitfield", "Leeds"], "PERSON"),
    ("my name is priya raman and my card is lost", ["priya raman"], "PERSON"),
    ("DR. ALAN TURING HERE, PLEASE CALL BACK", ["ALAN TURING"], "PERSON"),
    ("Regards, maria garcia", ["maria garcia"], "PERSON"),
    (
        "send the card to 221 Baker Street, Apt 4B please",
        ["221 Baker Street", "Apt 4B"],
        "STREET_ADDRESS",
    ),
    ("Lieferung an Hauptstraße 12, 10115 Berlin", ["Hauptstraße 12", "10115"], "STREET_ADDRESS"),
    ("j'habite 12 rue de la Paix, 75002 Paris", ["12 rue de la Paix", "75002"], "STREET_ADDRESS"),
    ("postcode SW1A 1AA for the new card", ["SW1A 1AA"], "POSTCODE"),
    ("I am 41 years old and want a card", ["41"], "AGE"),
    ("call +33 1 42 68 53 00 or +1 (415) 555-0132", ["42 68 53 00", "555-0132"], "PHONE_NUMBER"),
    (
        "card 4111 1111 1111 1111, iban DE89 3704 0044 0532 0130 00",
        ["4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00"],
        "CREDIT_CARD",
    ),
    ("mail me at jane.doe@example.co.uk", ["jane.doe@example.co.uk"], "EMAIL_ADDRESS"),
    # Names made of words that are also banking terms (issue #13): a banking word inside a
    # name-shaped span no longer makes the whole span noise.
    ("Hi, this is Ron Swift, my card payment failed", ["Ron Swift"], "PERSON"),
    ("Johnny Cash here, where is my transfer?", ["Johnny Cash"], "PERSON"),
    ("Call me at 415-555-0132, Sam Pay", ["Sam Pay", "555-0132"], "PERSON"),
    # A date of birth in any common format, not parsed as a phone number.
    ("born 12/03/1985, please update my profile", ["12/03/1985"], "DATE_OF_BIRTH"),
    ("My date of birth is 1985-03-12", ["1985-03-12"], "DATE_OF_BIRTH"),
    ("I was born on March 3rd, 1985 and need a new card", ["March 3rd, 1985"], "DATE_OF_BIRTH"),
    # Driving licences in several formats, whole (not half a phone number), and IPv6.
    ("my driver's license number is F123-456-78-901-0", ["F123-456-78-901-0"], "US_DRIVER_LICENSE"),
    ("DL: 123 456 789, will that do?", ["123 456 789"], "US_DRIVER_LICENSE"),
    (
        "a login from 2001:db8:85a3::8a2e:370:7334 was not me",
        ["2001:db8:85a3::8a2e:370:7334"],
        "IP_ADDRESS",
    ),
    # Religion (special category), an employer after its cue, ages in other phrasings.
    ("As a Muslim I cannot pay interest", ["Muslim"], "NRP"),
    ("I work at Acme Logistics and my salary is late", ["Acme Logistics"], "ORGANIZATION"),
    ("I turned 17 last week, can I get a card?", ["17"], "AGE"),
    # The town beside a postcode in an address line.
    ("send it to 12 Elm Road, 80571 New Thomas.", ["New Thomas", "80571"], "LOCATION"),
]


@pytest.mark.parametrize(
    ("text", "secrets", "expected_type"),
    CASES,
    ids=[c[2] + "-" + str(i) for i, c in enumerate(CASES)],
)
def test_pii_is_replaced_by_typed_placeholders(
    scrubber: PresidioScrubber, text: str, secrets: list[str], expected_type: str
) -> None:
    result = scrubber.scrub(text)
    for secret in secrets:
        assert secret not in result.text, result.text
    assert f"<{expected_type}>" in result.text
    assert expected_type in result.findings
    # Findings are counts, never values.
    assert all(isinstance(v, int) for v in result.findings.values())
    assert result.policy_version.startswith("presidio-")


@pytest.mark.parametrize(
    "text",
    [
        "Why is my ATM cash withdrawal showing as pending?",
        "How do I exchange my GBP to AUD?",
        "I was charged twice for a Visa payment, please refund",
        "my top up failed again",
        "Can I use Apple Pay with my card?",
        "The ATM ate my card.",
        "I swapped Russian Ruble for UK pounds and was charged too much",
        "my payment on 12/03/2024 failed",
        # Countries, continents and states identify no one (HIPAA Safe Harbor keeps them).
        "I'm in Spain and my wallet was stolen, can you block my card?",
        "How long does a transfer from the United Kingdom take?",
        "Can I use my card in California and Texas?",
        # A nationality that qualifies money or a banking thing, not a person.
        "I need Australian dollars instead of UK currency.",
        "Are there still fees for european top-ups?",
        # Function words after a sign-off cue, and chat words NER calls organisations.
        "In regards to the PIN of the card?",
        "I need my card ASAP!",
    ],
)
def test_banking_text_without_pii_is_left_alone(scrubber: PresidioScrubber, text: str) -> None:
    result = scrubber.scrub(text)
    assert result.text == text
    assert result.findings == {}


def test_batch_equals_one_by_one(scrubber: PresidioScrubber) -> None:
    texts = [c[0] for c in CASES]
    assert [r.text for r in scrubber.scrub_batch(texts)] == [scrubber.scrub(t).text for t in texts]
    assert scrubber.scrub_batch([]) == []


def test_smaller_places_are_replaced_and_coarse_ones_on_request(scrubber: PresidioScrubber) -> None:
    text = "I moved from Leeds to Spain last month"
    assert "Leeds" not in scrubber.scrub(text).text and "Spain" in scrubber.scrub(text).text
    strict = PresidioScrubber(scrub_coarse_places=True)
    assert "Spain" not in strict.scrub(text).text
    assert strict.policy_version != scrubber.policy_version


def test_a_nationality_of_a_person_is_replaced(scrubber: PresidioScrubber) -> None:
    result = scrubber.scrub("As a Nigerian citizen living here, can I open an account?")
    assert "Nigerian" not in result.text and "NRP" in result.findings


def test_the_regex_pass_finds_licences_without_a_cue_only_when_unmistakable() -> None:
    # A UK licence number's shape is unique; a bare 9-digit number is not a licence.
    assert RegexScrubber().scrub("ref MORGA753116SM9IJ attached").text == (
        "ref <US_DRIVER_LICENSE> attached"
    )
    assert "US_DRIVER_LICENSE" not in RegexScrubber().scrub("order 123456789 shipped").findings
    assert RegexScrubber().scrub("my licence is 99 days old").findings == {}


def test_ibans_in_any_case_and_followed_by_a_word() -> None:
    scrubbed = RegexScrubber().scrub("pay de89 3704 0044 0532 0130 00 is mine").text
    assert scrubbed == "pay <IBAN_CODE> is mine"


# Forms of personal data as people write them around the world (written by hand, not drawn
# from any evaluation corpus): each value must be gone from the scrubbed text.
WORLD_FORMS = [
    ("a 41 y/o customer wants a card", ["41"]),
    ("my daughter is 9, can she have a card?", ["9"]),
    ("age: 67 / income: pension", ["67"]),
    ("born 27-Nov-2000, card still not here", ["27-Nov-2000"]),
    ("DOB 1949/11/12", ["1949/11/12"]),
    ("date of birth: 4 Feb 1979", ["4 Feb 1979"]),
    ("Ship it to PO Box 4471, Hobart TAS 7001", ["PO Box 4471", "Hobart", "7001"]),
    ("address: 8/565 Harbour Esplanade, Cairns QLD 4870", ["8/565 Harbour Esplanade", "4870"]),
    ("Storgatan 12, 114 55 Stockholm", ["Storgatan 12", "114 55", "Stockholm"]),
    ("ul. Długa 5, 00-950 Warszawa", ["Długa 5", "00-950", "Warszawa"]),
    ("Rua Augusta, 274\n1100-053 Lisboa", ["Rua Augusta, 274", "1100-053", "Lisboa"]),
    ("Arany János utca 5., H-1051 Budapest", ["Arany János utca 5", "H-1051", "Budapest"]),
    ("Professor Jane Whitlock approved it", ["Jane Whitlock"]),
    ("Beneficiary: Okafor, Chidi", ["Okafor", "Chidi"]),
    ("Kind regards,\nsylvie van der berg", ["sylvie van der berg"]),
    ("hey its Megan Oduya again", ["Megan Oduya"]),
    ("my employer Hartley and Sons has not paid", ["Hartley and Sons"]),
    ("salary from Virtanen Rakennus Oy is missing", ["Virtanen Rakennus Oy"]),
    ("we are Lutheran, is there a church account?", ["Lutheran"]),
    ("DL A 123 456 789 012 was rejected", ["A 123 456 789 012"]),
    ("Tel. 0221/123456 after six", ["0221/123456"]),
    ("call 03639 15000 806 please", ["03639 15000 806"]),
]


@pytest.mark.parametrize(("text", "values"), WORLD_FORMS, ids=[t for t, _ in WORLD_FORMS])
def test_personal_data_in_forms_from_many_countries_is_replaced(
    scrubber: PresidioScrubber, text: str, values: list[str]
) -> None:
    scrubbed = scrubber.scrub(text).text
    for value in values:
        assert value not in scrubbed, (value, scrubbed)


# What the wider rules must not touch: numbers beside words, shouting, a "beneficiary" that
# names no one, a reference with a slash.
ORDINARY = [
    "I paid 2000 Euros, 300 went missing and the rest is pending",
    "I tried to withdraw 50 pounds but it only gave me 30. Where is the rest of my money?",
    "I have tried 5 times at this point to complete a transfer",
    "Why is my beneficiary not allowed?",
    "I'm Very Angry About This Charge",
    "Account 55/20 was blocked, 3 times in one day",
    "my employer pays on the 25th",
    "I moved to the UK 2 weeks ago, can I keep the card?",
    "I was charged on 12/03/2024 and again on 2024-03-19",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_banking_text_survives_the_wider_rules(
    scrubber: PresidioScrubber, text: str
) -> None:
    assert scrubber.scrub(text).text == text
