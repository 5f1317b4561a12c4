"""Coarse places: countries, continents, and states or provinces.

The scrubber follows HIPAA's Safe Harbor de-identification standard (45 CFR 164.514(b)(2)):
geographic units smaller than a state are identifiers, while a state or a country is not. So
"I'm in Spain and my wallet was stolen" keeps "Spain" (what the text is about), and a town, a
street or a postcode is replaced. ``privacy.scrub_coarse_places = true`` replaces these too.

Names come from pycountry (ISO 3166 country names and first-level subdivisions); first-level
units that are cities, districts or municipalities, and those of countries divided into many
small units, are not coarse and stay scrubbed.
"""

from __future__ import annotations

import functools
import re

# Continents, regions and everyday names of countries and unions that ISO does not list.
_EXTRA = (
    "Africa", "Antarctica", "Asia", "Europe", "North America", "South America",
    "Central America", "Latin America", "the Americas", "America", "Oceania", "Australasia",
    "Middle East", "Scandinavia", "Caribbean", "Eastern Europe", "Western Europe",
    "Southeast Asia", "European Union", "EU", "EEA", "European Economic Area", "Eurozone",
    "Euro area", "UK", "U.K.", "USA", "U.S.A.", "US", "U.S.", "United States of America",
    "the States", "Britain", "Great Britain", "Holland", "Czechia", "Russia", "South Korea",
    "North Korea", "Vietnam", "Iran", "Syria", "Laos", "Bolivia", "Venezuela", "Tanzania",
    "Moldova", "Taiwan", "Macau", "Hong Kong", "Ivory Coast", "Turkey",
)  # fmt: skip
_COARSE_TYPES = re.compile(r"state|province|country|nation|land|territor|region|autonom", re.I)
_FINE_TYPES = re.compile(r"city|district|municipal|commune|borough|county|parish", re.I)
_MAX_UNITS = 60  # more first-level units than this, and they are small ones


def _normal(name: str) -> str:
    name = re.sub(r"\s*[\[(].*?[\])]", "", name)  # "Wales [Cymru GB-CYM]"
    name = re.sub(r"^the\s+", "", name.strip(), flags=re.IGNORECASE)
    return " ".join(name.lower().replace(".", "").split())


@functools.cache
def _coarse_names() -> frozenset[str]:
    import pycountry

    names = {_normal(n) for n in _EXTRA}
    for country in pycountry.countries:
        for attribute in ("name", "common_name", "official_name"):
            value = getattr(country, attribute, None)
            if value:
                names.add(_normal(value))
    units: dict[str, list[str]] = {}
    for unit in pycountry.subdivisions:
        first_level = unit.parent_code is None
        if first_level and _COARSE_TYPES.search(unit.type) and not _FINE_TYPES.search(unit.type):
            units.setdefault(unit.country_code, []).append(unit.name)
    for listed in units.values():
        if len(listed) <= _MAX_UNITS:
            names.update(_normal(n) for n in listed)
    return frozenset(names)


def is_coarse_place(fragment: str) -> bool:
    """Whether ``fragment`` names a country, a continent or a state/province, and no more."""
    return _normal(fragment) in _coarse_names()
