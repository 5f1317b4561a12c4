"""Banking words that spaCy's NER mistakes for names, places and organisations.

A span NER calls a person or an organisation in a banking support text is often a banking
term ("the ATM", "Visa", "Apple Pay"); :func:`is_noise` tells those apart from names, including
names made of banking words ("Ron Swift", "Johnny Cash").
"""

from __future__ import annotations

import re

# NER tags these as people or organisations in banking support text; they are not PII, and
# scrubbing them would change what the text is about.
# Currency names: not PII as one word, and the last word of a currency phrase ("Russian
# Ruble") however written.
_CURRENCIES = frozenset(
    [
        "dollar",
        "dollars",
        "euro",
        "euros",
        "pound",
        "pounds",
        "franc",
        "francs",
        "ruble",
        "rubles",
        "rouble",
        "roubles",
        "yen",
        "yuan",
        "rupee",
        "rupees",
        "peso",
        "pesos",
        "krona",
        "kroner",
        "zloty",
    ]
)
_CURRENCY_NOUNS = _CURRENCIES | frozenset(
    ["krone", "forint", "lira", "real", "reais", "rand", "won", "baht"]
)
# Words of support chat that NER takes for organisations when capitalised or shouted
# ("I need my card ASAP", "HELP"): they name no one.
_CHAT = frozenset(
    [
        "asap", "fyi", "pls", "plz", "thx", "btw", "omg", "help", "urgent", "urgently",
        "problem", "issue", "please", "thanks", "solve", "identity", "bank", "account",
    ]
)  # fmt: skip
_NOT_PII = (
    _CURRENCIES
    | _CHAT
    | frozenset(
        [
            "atm",
            "atms",
            "visa",
            "mastercard",
            "maestro",
            "amex",
            "paypal",
            "apple",
            "google",
            "pay",
            "sepa",
            "swift",
            "iban",
            "bic",
            "pin",
            "app",
            "card",
            "cards",
            "eur",
            "usd",
            "gbp",
            "sterling",
            "jpy",
            "chf",
            "rub",
            "cny",
            "inr",
            "bitcoin",
            "btc",
            "crypto",
            "cash",
            "top",
            "topup",
            "top-up",
            "transfer",
            "refund",
            "uk",
            "us",
            "usa",
            "eu",
            "american",
            "express",
            "revolut",
            "monzo",
            "fiat",
            "eta",
            "aud",
            "cad",
            "nzd",
            "sgd",
            "hkd",
            "sek",
            "nok",
            "dkk",
            "pln",
            "czk",
            "huf",
            "try",
            "ron",
            "bgn",
            "hrk",
            "mxn",
            "brl",
            "zar",
            "aed",
            "sar",
            "thb",
            "krw",
        ]
    )
)


def is_noise(fragment: str) -> bool:
    """Whether an NER span is a banking term rather than a name or a place.

    A span with a banking word in it ("the ATM", "my app shows") is noise, unless the span is
    shaped like a person's name (two or three capitalised words, no acronym): "Ron Swift",
    "Johnny Cash" and "Sam Pay" are names made of words that are also banking terms.
    Product phrases ("Apple Pay") and currencies ("Russian Ruble") are noise however written.
    """
    words = re.findall(r"[A-Za-z'-]+", fragment)
    lower = [w.lower() for w in words]
    if not words or " ".join(lower) in _NOT_PII_PHRASES or lower[-1] in _CURRENCY_NOUNS:
        return True
    if not any(w in _NOT_PII for w in lower):
        return False
    name_shaped = 2 <= len(words) <= 3 and all(w[0].isupper() and not w.isupper() for w in words)
    return not name_shaped


# What a nationality qualifies when it is not a person's: "Russian rubles", "a European card".
_QUALIFIED = _CURRENCY_NOUNS | frozenset(
    [
        "card", "cards", "bank", "banks", "banking", "account", "accounts", "transfer",
        "transfers", "top", "topup", "topups", "fee", "fees", "currency", "currencies",
        "payment", "payments", "cheque", "cheques", "money", "cash", "atm", "atms", "number",
        "numbers", "address", "iban", "branch", "merchant", "merchants", "shop", "shops",
        "store", "stores", "website", "app", "exchange", "rate", "rates", "tax", "taxes",
        "holiday", "holidays", "trip",
    ]
)  # fmt: skip
_NEXT_WORD = re.compile(r"^[\s-]*([A-Za-z]+)")


def is_qualifying_a_banking_noun(following: str) -> bool:
    """Whether the text right after a nationality starts with a banking noun it qualifies."""
    match = _NEXT_WORD.match(following)
    return match is not None and match.group(1).lower() in _QUALIFIED


# Multi-word banking terms NER tags as names or organisations. Anything else of several words
# that NER calls a person stays a person, even when its words are also banking terms.
_NOT_PII_PHRASES = frozenset(
    [
        "apple pay", "google pay", "samsung pay", "western union", "american express",
        "direct debit", "standing order", "bank transfer", "debit card", "credit card",
        "virtual card", "disposable card", "top up", "top-up", "visa card", "master card",
        "exchange rate", "exchange rates", "pin number", "swift code", "atm card", "apple watch",
    ]
)  # fmt: skip
