"""Recognizers for what NER misses: PII recognised by its shape and the words around it.

Each entry is ``(entity, pattern, group)``: the group's span is what gets replaced. They are
written from the forms these values take in the world (postal formats of many countries,
street types in several languages, the ways people give an age or a date of birth), not from
the templates of one corpus; each addition is judged on the development corpora and on
Banking77's *train* split for false positives (``bench/scrub.py``).

Precision guards, by design:
- a number is an age or a postcode only next to its cue (``aged``, ``y/o``, a town, a state
  code, an address line), never on its own;
- words that are also common English ("Via", "Place", "Major", "Judge") count as a street type
  or a title only in their capitalised form and next to a capitalised name or a house number;
- dates are personal only after a birth cue; other dates (of a payment) stay.
"""

from __future__ import annotations

import re

_I = re.IGNORECASE
_UP = r"A-ZÀ-ÖØ-ÝĀ-Ž"  # capital letters, Latin scripts
_LOW = r"a-zß-öø-ÿā-ž"
_NAME = rf"[A-Za-z{_UP}{_LOW}][A-Za-z{_UP}{_LOW}'\u2019-]+"
_INITIAL = rf"(?:[{_UP}]\.\s?)"
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
# Dates as people write them: 12/3/85, 12.03.1985, 1985-03-12, 1985/03/12, 1985.03.12,
# 12 Mar 1985, 12-Mar-1985, 3rd of March 1985, March 12th, 1985, Nov 27 2000, March 1985.
_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})\b|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}\b"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?[\s-]+(?:of\s+)?{_MONTH}\.?,?[\s-]+(?:\d{{4}}|'?\d{{2}})\b"
    rf"|{_MONTH}\.?[\s-]+\d{{1,2}}(?:st|nd|rd|th)?,?[\s-]+\d{{4}}\b"
    rf"|{_MONTH}\.?,?\s+\d{{4}}\b)"
)
_BIRTH_CUE = (
    r"(?:born(?:\s+(?:on|in))?|birth\s*date|birthdate|date\s+of\s+birth|d\.?\s?o\.?\s?b\.?"
    r"|birthday|geboren(?:\s+am)?|geb\.|n[ée]e?\s+le|nacid[oa]\s+el|nascid[oa]\s+em)"
)
# Honorifics. Short forms in any case; words that are also common English only capitalised.
_TITLE_ANY_CASE = (
    r"(?:mr|mrs|ms|miss|mx|dr|prof|professor|sir|madam|dame|lady|lord|rev|revd|reverend|fr|"
    r"mme|mlle|herr|frau|sr|sra|srta|señor|señora|señorita|sig|sig\.ra|dott|dott\.ssa|ing|mag|"
    r"capt|col|lt|sgt|cpl|insp|hon|univ\.\s?prof)"
)
_TITLE_CAPITALISED = (
    r"(?:Captain|Colonel|Major|General|Judge|Father|Sister|Pastor|Rabbi|Imam|Dona|Dom|Pan|Pani|Don)"
)
_CAP_NAME = rf"(?-i:[{_UP}][A-Za-z{_UP}{_LOW}'\u2019-]+)"
_NAME_PARTICLE = r"(?:van|von|der|den|de|del|della|da|di|du|la|le|dos|das|zu|ter|ten|bin|al|el)"
_DEGREE = (
    r"(?:(?i:b\.\s?sc\.?|b\.\s?eng\.?|m\.\s?sc\.?|m\.\s?eng\.?|ph\.\s?d\.?|dipl\.-ing\.?|"
    r"b\.\s?a\.|m\.\s?a\.)|(?-i:MBA|MD|DDS|DVM|BSc|MSc|PhD|Jr\.?|Sr\.?|II|III|IV))"
)
# A name after a cue: "jane doe", "J. Doe", "Doe, Jane", "sylvie van der kint", "Selena Maricela
# Carretero Posada", "Jann Etzold B.Eng.". Beyond two words (or after a comma) only
# capitalised words count, so "regards, john please call" stops at "john".
_PERSON_NAME = (
    rf"(?:{_INITIAL}{{0,2}}{_NAME}(?:,\s+{_CAP_NAME}(?![\w'-])"
    rf"|(?:\s+{_NAME_PARTICLE}){{1,2}}\s+{_NAME}"
    rf"|\s+{_NAME}(?:(?:\s+{_NAME_PARTICLE}){{1,2}}\s+{_NAME}|(?:\s+{_CAP_NAME}){{0,2}}))?"
    rf"(?:,?\s+{_DEGREE}(?![\w-]))?)"
)

# Street types that follow the street's name (English and others that put the number first).
_STREET_SUFFIX = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    r"terrace|close|crescent|square|sq|parkway|pkwy|highway|hwy|courts?|mews|gardens?|grove|"
    r"hill|park|row|walk|green|view|vale|meadows?|forge|stravenue|islands?|ports?|ridge|fields?|"
    r"landing|junction|station"
)
# More street types; many are also common words ("point", "rest", "course"), so these count
# only capitalised, after capitalised words: "8/565 Tammy Place", "12 Harbour Esplanade".
_MORE_STREET_TYPES = (
    "alley annex arcade bay beach bend bluff bridge brook burg bypass camp canyon cape "
    "causeway center centre circle circuit cliff common corner course cove creek crest "
    "crossing curve dale dam divide esplanade estate estates expressway extension falls "
    "ferry ford forest fork fort freeway gateway gate glen harbor harbour haven heights "
    "hollow inlet isle key knoll lake lakes loop mall manor mill mission motorway mount "
    "mountain orchard oval parade pass passage path pike pines plains plaza point prairie "
    "promenade quay ramp ranch rapids rise river route run shoal shore springs spur summit "
    "trace track trail tunnel turnpike valley viaduct village ville vista wharf wynd chase "
    "approach broadway concourse end marg nagar chowk colony enclave layout cross main "
    "roadside tce cres cct esp pde hts neck well wells crossroad light lights lodge lock locks "
    "flat flats overpass underpass trafficway throughway skyway radial union stream square road "
    "street lane drive court terrace way ganj zila puram"
)
# A capitalised street type, also in the plural ("Richard Squares", "Anthony Roads").
_STREET_SUFFIX_CAPITALISED = "|".join(f"{w.capitalize()}s?" for w in _MORE_STREET_TYPES.split())
# Street types that precede the street's name (Romance and Slavic languages, Hungarian after).
_STREET_PREFIX_UNAMBIGUOUS = (
    r"Ca[ñn]ada|Glorieta|Cuesta|Vial|Pasaje|Urbanizaci[oó]n|Rotonda|Plac|Osiedle|Rua|Travessa|Avenida|Alameda|Calle|Carrera|Calzada|Callej[oó]n|Cerrada|Privada|Andador|"
    r"Strada|Bulevardul|Calea|Aleea|[ȘŞS]oseaua|Pia[țţt]a|Splaiul|Intrarea|Ulica|Aleja|Viale|"
    r"Piazza|Piazzale|Vicolo|Corso|Rue|Chemin|Pra[çc]a|Estrada|Rodovia|Largo|Paseo|Rambla|"
    r"Avinguda|Carrer|Ulice|Namesti|Náměstí|Nábřeží|Třída|Trieda|Námestie|Nábrežie"
)
_STREET_PREFIX_NEEDS_NUMBER = (
    r"via|avenue|av\.|boulevard|bd|bd\.|place|route|impasse|all[ée]e|quai|plaza|camino|ronda|"
    r"contrada|rotonda|borgo|diagonal|transversal|circuito|ul\.|al\.|os\.|str\.|mont[ée]e|rang"
)
_STREET_COMPOUND = (
    r"stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|damm|pad|laan|straat|plein|gracht|dijk|"
    r"kade|singel|hof|steeg|gatan|gata|gate|gade|v[äa]gen|v[äa]g|vej|vei|veien|vegen|str[æa]de|"
    r"torv|katu|kuja|tie|polku|tori|kaari|rinne|puistikko|faret|bakken|svingen|tunet"
)
_PARTICLE = r"(?:de|da|do|dos|das|del|de la|di|della|lui|dei|degli|la|le|des|du|van|von|der)"
_HOUSE_NUMBER = r"\d{1,5}[a-zA-Z]?(?:\s?[/-]\s?\d{1,5}[a-zA-Z]?)?"
_UNIT = (
    r"(?:apt|apartment|suite|ste|unit|flat|floor|fl|studio|appartamento|piano|interno|interior|"
    r"int|depto|dpto|departamento|piso|bloco|apto|apartamento|lgh|bl|sc|ap|et|étage|"
    r"lejlighed|whg|top|stiege|stock|puerta|escalera|portal|level|lvl|andar|sala|casa|lote)"
)
_UNIT_TAIL = rf"(?:,?\s*(?i:{_UNIT})\.?\s*#?\s*\d{{1,5}}[a-zA-Z]?)?"
# Postal codes by country, as a number or a letter group they could not be taken for.
_POSTCODE_SHAPE = (
    r"(?:\d{5}-\d{3}|\d{4}-\d{3}|\d{2}-\d{3}|\d{3}-\d{4}|\d{3}\s\d{2}|\d{3}\s\d{3}|\d{4,6}"
    r"|(?:A|B|D|F|H|I|L|N|S|CH|DK|FI|FIN|NL|SE|NO|CZ|SK|PL|PT|HU|RO|AT|DE|FR|BE|LU|IT|ES|HR|"
    r"SI|EE|LV|LT|GR)-\d{4,5})"
)
_POSTCODE_LETTERS = (
    r"(?:[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"  # United Kingdom
    r"|[A-Z]\d[A-Z]\s?\d[A-Z]\d"  # Canada
    r"|\d{4}\s?[A-Z]{2}"  # Netherlands
    r"|[A-Z]\d[\dW]\s?[A-Z\d]{4})"  # Ireland (Eircode)
)
_TOWN = (
    rf"(?:[{_UP}][\w'\u2019-]*(?:[\s-](?:(?:[a-z]{{1,3}}|sur)[\s-])?[{_UP}][\w'\u2019-]*){{0,3}})"
)
_AU_STATES = r"(?:NSW|VIC|QLD|WA|SA|TAS|ACT|NT)"

PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    # A date of birth is personal whatever its format; other dates (of a payment) are not.
    (
        "DATE_OF_BIRTH",
        re.compile(rf"\b{_BIRTH_CUE}(?:\s+(?:is|was|on|:))?\s*[:\-]?\s*({_DATE})", _I),
        1,
    ),
    (
        "PERSON",
        re.compile(rf"\b{_TITLE_ANY_CASE}\.?\s+({_PERSON_NAME})", _I),
        0,
    ),
    (
        "PERSON",
        re.compile(rf"\b{_TITLE_CAPITALISED}\s+((?:{_INITIAL}{{0,2}})[{_UP}][\w'\u2019-]+)"),
        0,
    ),
    (
        "PERSON",
        re.compile(
            r"\b(?:my name is|my name's|(?:full |customer |account |my )?name\s*:|i am called|"
            r"signed,?|(?:kind |best |warm |many )?regards,?|thanks,|thanks!|thank you,|"
            r"cheers,|sincerely,?|yours (?:sincerely|faithfully|truly),?|best,|rgds,?|br,|"
            r"beneficiary\s*:|account holder\s*:|card ?holder\s*:|under the name|in the name of|"
            r"on behalf of)"
            rf"\s+({_PERSON_NAME})",
            _I,
        ),
        1,
    ),
    # "this is Ana Souza", "hey its Megan Chang again": capitalised names only after these
    # ("I'm" is left out: "I'm Very Angry About This" is how people shout).
    (
        "PERSON",
        re.compile(
            rf"\b(?i:this is|it's|its|it is)\s+({_CAP_NAME}(?:,\s+{_CAP_NAME}|"
            rf"(?:\s+{_NAME_PARTICLE}){{0,2}}\s+{_CAP_NAME}){{1,3}})"
        ),
        1,
    ),
    # A signature line: "-- Name" at the start of a line.
    ("PERSON", re.compile(rf"(?:^|\n)\s*(?:--|—)\s*({_PERSON_NAME})\s*$", re.M), 1),
    # A relative or a caller named after the word (capitalised name: "my husband lost" is not).
    (
        "PERSON",
        re.compile(
            r"\b(?i:husband|wife|partner|son|daughter|mother|father|mum|mom|dad|brother|sister|"
            r"friend|colleague|boss|landlord|tenant|customer|caller|client|beneficiary|"
            r"account holder|card ?holder)"
            rf",?\s+((?:{_INITIAL}{{0,2}})[{_UP}][{_LOW}'\u2019-]+(?:\s+[{_UP}][{_LOW}'\u2019-]+)?"
            rf"|[{_UP}][{_UP}'\u2019-]+\s+[{_UP}][{_UP}'\u2019-]+)"
        ),
        1,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            rf"\b(?:no\.?\s*)?{_HOUSE_NUMBER},?\s+(?:[A-Za-z{_UP}][\w'.-]*\s+){{0,3}}"
            rf"(?:{_STREET_SUFFIX})\b\.?"
            rf"(?:,?\s*{_UNIT}\.?\s*#?\s*[\w-]{{1,6}})?",
            _I,
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            rf"\b(?:[Nn]o\.?\s*)?{_HOUSE_NUMBER},?\s+(?:[{_UP}][\w'.-]*\s+){{1,3}}"
            rf"(?:{_STREET_SUFFIX_CAPITALISED})\b\.?"
            rf"(?:,?\s*(?i:{_UNIT})\.?\s*#?\s*[\w-]{{1,6}})?"
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            rf"\b[{_UP}][\w'\u2019-]+(?:{_STREET_COMPOUND})\.?(?:\s+|,\s*){_HOUSE_NUMBER}"
            r"(?:\s?[a-z]\b)?"
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            rf"\b(?i:{_STREET_PREFIX_UNAMBIGUOUS}|ulica|ul\.|aleja|al\.|os\.)"
            rf"(?:\s+(?:{_PARTICLE}\s+)?[{_UP}\d][\w'\u2019.-]*){{1,4}}"
            rf"(?:,?\s*(?:n[º°o]\.?\s*|#\s*)?{_HOUSE_NUMBER}{_UNIT_TAIL})?"
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            rf"\b(?:{_STREET_PREFIX_NEEDS_NUMBER})\s+(?:[{_UP}][\w'\u2019.-]*\s?){{1,4}}"
            rf",?\s*(?:n[º°o]\.?\s*|#\s*)?{_HOUSE_NUMBER}{_UNIT_TAIL}",
            _I,
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            rf"\b{_HOUSE_NUMBER},?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|impasse|all[ée]e|"
            r"quai|calle|via|avenida|plaza|rang|mont[ée]e|route)\s+(?:[\w'\u2019-]+\s?){1,4}",
            _I,
        ),
        0,
    ),
    # Hungarian and similar: the street type after the name, then the number.
    (
        "STREET_ADDRESS",
        re.compile(
            rf"\b(?:[{_UP}][\w'\u2019-]*\s+){{1,3}}(?:[a-zà-ž]+\s+)?(?:utca|út|útja|tér|körút|"
            rf"sor|köz|fasor|rakpart|u\.)\s+{_HOUSE_NUMBER}\.?"
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            rf"((?:[{_UP}][\w'\u2019.-]*\s+){{1,4}}{_HOUSE_NUMBER}{_UNIT_TAIL})"
            rf"(?:\s*\n[ \t]*|,\s*)(?:{_POSTCODE_SHAPE}|{_POSTCODE_LETTERS})\s+[{_UP}]"
        ),
        1,
    ),
    (
        "STREET_ADDRESS",
        re.compile(rf"\b{_UNIT}\.?\s*#?\s*\d{{1,5}}[a-z]?\b(?:\s*[/-]\s*\d{{1,5}})?", _I),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b(?:p\.?\s?o\.?\s?box|post\s+office\s+box|gpo\s+box|private\s+bag|locked\s+bag|"
            r"postfach|caixa\s+postal|apartado(?:\s+postal)?|bo[iî]te\s+postale|case\s+postale|"
            r"skrytka\s+pocztowa|postboks|postilokero|po\s+box)\s*\.?\s*(?:no\.?\s*)?#?\s*\d{1,6}\b",
            _I,
        ),
        0,
    ),
    # What follows an address cue, up to the end of the clause, when it holds a number.
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b(?:(?:postal |home |new |delivery |mailing |my )?address(?:\s+is)?\s*:|"
            r"(?:new |my )address is|i live at|lives at|living at|residing at)"
            r"\s+((?=[^,\n]{0,40}\d)[^,\n.!?;:()]{3,60}?\d[\w/-]*)(?=\s*(?:[,\n.!?;()]|$))",
            _I,
        ),
        1,
    ),
    ("POSTCODE", re.compile(rf"\b{_POSTCODE_LETTERS}\b"), 0),
    ("POSTCODE", re.compile(r"\b(?:[A-Z]{2}\s+)(\d{5}(?:-\d{4})?)\b"), 1),
    ("POSTCODE", re.compile(rf"\b{_AU_STATES}\s+(\d{{4}})\b"), 1),
    (
        "POSTCODE",
        re.compile(
            r"\b(?:zip code|zip|postcode|post code|postal code|plz|cep|c[óo]digo postal|"
            r"code postal|cp|psč|psc|irányítószám|postinumero|postnummer)[:\s]+(\w[\w -]{2,8}\w)",
            _I,
        ),
        1,
    ),
    # Postcode then town, at the start of an address line or after a comma: "2000 Sydney",
    # ", 76317-066 Sampaio", "\nH-8763 Ráchídhida".
    (
        "POSTCODE",
        re.compile(rf"(?:,\s*|\n[ \t]*)({_POSTCODE_SHAPE})\s+[{_UP}]"),
        1,
    ),
    (
        "LOCATION",
        re.compile(rf"(?:,\s*|\n[ \t]*)(?:{_POSTCODE_SHAPE}|{_POSTCODE_LETTERS})\s+({_TOWN})"),
        1,
    ),
    # Town then postcode, closing an address line: ", Alavieska 31706", "Mumbai - 400001".
    (
        "LOCATION",
        re.compile(
            rf"(?:,\s*|\n[ \t]*)({_TOWN})\s+(?:-\s+)?(?:{_POSTCODE_SHAPE}|{_POSTCODE_LETTERS})"
            r"(?=\s*(?:[,.;!?\n]|$))",
        ),
        1,
    ),
    (
        "POSTCODE",
        re.compile(
            rf"(?:,\s*|\n[ \t]*){_TOWN}\s+(?:-\s+)?({_POSTCODE_SHAPE})(?=\s*(?:[,.;!?\n]|$))",
        ),
        1,
    ),
    # A postcode closing an address line after a comma: "..., 25210." / "..., 4170 -"
    ("POSTCODE", re.compile(rf",\s*({_POSTCODE_SHAPE}(?:-\d{{4}})?)\s*(?:[.!?\n-]|$)"), 1),
    ("POSTCODE", re.compile(rf"\b[{_UP}][{_LOW}'\u2019]+\s+(\d{{5}})\b"), 1),
    # A town after its cue: "city: Porto", "I live in Espoo".
    (
        "LOCATION",
        re.compile(rf"\b(?:[Cc]ity|[Tt]own|[Vv]illage)\s*:?\s+({_TOWN})"),
        1,
    ),
    ("AGE", re.compile(r"\b(\d{1,3})[\s-]*(?:years?|yrs?)[\s-]*old\b", _I), 1),
    ("AGE", re.compile(r"\b(\d{1,3})\s*(?:y/o|y\.o\.?|yo|yrs?\.?\s+of\s+age)(?![\w/])", _I), 1),
    ("AGE", re.compile(r"\baged?\s*[:=]?\s*(\d{1,3})\b", _I), 1),
    ("AGE", re.compile(r"\b(?:turn(?:s|ed|ing)?|age(?:d| of)?\s*(?:is|:)?)\s+(\d{1,3})\b", _I), 1),
    ("AGE", re.compile(r"\b(\d{1,3})\s+(?:years?\s+)?of\s+age\b", _I), 1),
    (
        "AGE",
        re.compile(
            r"\b(?:son|daughter|kid|child|boy|girl|grandson|granddaughter|brother|sister|nephew|"
            r"niece|teen|teenager)\s+(?:is|who\s+is|who's|,)\s+(?:only\s+|just\s+|now\s+)?"
            r"(\d{1,2})\b(?!\s*(?:%|percent|days?|weeks?|months?|hours?|minutes?|times?|euros?|"
            r"dollars?|pounds?|usd|eur|gbp|cards?|transactions?|payments?|[.,]\d))",
            _I,
        ),
        1,
    ),
    # Religion is special-category data (GDPR art. 9): replaced wherever it is named.
    (
        "NRP",
        re.compile(
            r"\b(?:muslims?|islamic|christians?|catholics?|protestants?|jewish|jews?|hindus?|"
            r"buddhists?|sikhs?|atheists?|mormons?|evangelicals?|quakers?|orthodox|lutherans?|"
            r"baptists?|methodists?|anglicans?|pentecostals?|adventists?|presbyterians?|"
            r"calvinists?|shia|shiite|sunni|jains?|bah[aá]['\u2019\u02bc]?[ií]s?|zoroastrians?|"
            r"taoists?|shinto|rastafarians?|jehovah['\u2019]?s\s+witness(?:es)?)\b",
            _I,
        ),
        0,
    ),
    # An employer after its cue: capitalised words ("I work at Acme Logistics Ltd").
    (
        "ORGANIZATION",
        re.compile(
            r"\b(?:work(?:s|ed|ing)?\s+(?:at|for)|employed\s+(?:at|by)|employer(?:\s*(?:is|:))?|"
            rf"my\s+company,?|company\s*:)\s+([{_UP}][\w&'.-]*(?:(?:,\s+|\s+(?:and|&)\s+|\s+)"
            rf"[{_UP}][\w&'.-]*){{0,4}}(?:\s+(?:and|&)\s+Sons|\s+(?:k\.s\.|v\.o\.s\.|s\.r\.o\.))?)"
        ),
        1,
    ),
    # Capitalised words closed by a company's legal form: "Ferreira Comércio Ltda.", "Virtanen Oy".
    (
        "ORGANIZATION",
        re.compile(
            rf"\b[{_UP}][{_LOW}][\w'&.-]*(?:[\s,-]+(?:(?:e|és|and|&|und|et|y|i|a|de|da|do|dos|"
            rf"das|del|la|&)\s+)?[{_UP}][\w'&.-]*){{0,4}},?\s+(?:Ltd|Limited|LLC|L\.L\.C\.|Inc|"
            r"Corp|Corporation|GmbH|AG|KG|OG|OHG|GesmbH|e\.U\.|S\.A\.|SA|SAS|SARL|S\.R\.L\.|SRL|"
            r"S\.p\.A\.|SpA|B\.V\.|BV|N\.V\.|NV|AB|ASA|A/S|Oy|Oyj|Kft|Zrt|Nyrt|Bt|s\.r\.o\.|a\.s\.|"
            r"sp\.\s?z\s?o\.o\.|Lda|Ltda|S/A|EIRELI|S\.C\.|S\. de R\.L\.|PLC|plc|LLP|Pty|Pvt|Inc\.|"
            r"Co\.|Group|Holdings?|Associates|k\.s\.|v\.o\.s\.|spol\. s r\.o\.|and Sons|& Sons)"
            r"(?:\b|(?<=\.))\.?"
        ),
        0,
    ),
    (
        "AGE",
        re.compile(
            r"\b(?:i am|i'm|im)\s+(\d{1,3})\b"
            r"(?!\s*(?:%|percent|euros?|dollars?|usd|eur|gbp|pounds?))",
            _I,
        ),
        1,
    ),
)
