"""PII scrubbing of training examples: e-mail addresses, phone numbers, IBANs
and payment card numbers in an example's input and output are replaced by
[EMAIL], [PHONE], [IBAN] and [CARD]. Off by default; the curate stage runs it
over train and eval when `curate.pii: true` is set in taskling.yaml.

Scrubbed, in this order (so a card or IBAN is never half-read as a phone):
  - email: local@domain.tld, dots, plus and hyphens in the local part,
    subdomains;
  - iban: two letters, two check digits and the account, contiguous or in
    groups of four, any case; replaced only if the country is in the IBAN
    registry, the length is that country's and the ISO 13616 mod-97 check
    passes, so codes and hashes that merely look alike stay;
  - card: 13-19 digits starting 2-6 (the card networks' ranges), contiguous
    or grouped by single spaces or hyphens; replaced only if Luhn-valid;
  - phone: 7-15 digits in an international form (+44 20 7946 0958,
    +1 (555) 123-4567, +44 (0)20 ...), with a parenthesised area code
    ((030) 1234567), a national form with a trunk 0 and separators
    (030 12345678, 01 23 45 67 89, 0171/1234567) or the North American
    555-123-4567 shape.

Not scrubbed:
  - names, addresses and other free-text PII: no offline NER model ships
    with taskling (spaCy, Presidio, Flair and GLiNER all need a model that
    would have to be downloaded at run time, which taskling never does);
  - bare digit runs without + or separators (0301234567, order numbers),
    since they cannot be told apart from IDs; dates, times, versions, IP
    addresses, amounts and numbers glued to words are left alone on purpose.

Keys of dict outputs (an extraction task's JSON) are never touched.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable

KINDS = ("email", "phone", "iban", "card")

_EMAIL = re.compile(
    # start only where a local part can start, or "a.a.a...a@" is quadratic
    r"(?<![A-Za-z0-9_%+-])(?<![A-Za-z0-9_%+-]\.)"
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9_-])")

# Where a number may start and end: not glued to a word or identifier, not
# after a currency, order-number, path or query sign, not the tail of a
# decimal, date, time or version ("1.", "23-", "10:").
_START = r"(?<![\w#$€£¥@+=/\\])(?<![0-9][.,:-])(?<!\w-)"
_END = r"(?![\w@%€$£¥]|[.,:/+-][0-9A-Za-z])"

_IBAN = re.compile(
    r"(?<![\w#@/\\-])"
    r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?"
    r"(?![\w@-])")

_CARD = re.compile(
    # and never the account part of an IBAN that failed its check
    # ("DE89 3704 0044 0532 0130 01" holds a Luhn-valid run)
    _START + r"(?<![A-Za-z]{2}[0-9]{2}[ ])(?<![A-Za-z]{2}[0-9]{2}[ ][A-Za-z0-9]{4}[ ])"
    + r"[2-6](?:[0-9]{12,18}|[0-9]{3}(?P<sep>[ -])[0-9]{3,6}(?:(?P=sep)[0-9]{1,6}){1,3})"
    + _END)

_PHONE = re.compile(
    # and never the middle of a run of numbers ("BE68 5390 0754 7035", a row
    # of a table)
    _START + r"(?<![0-9][ ])" + r"""(?:
        \+[1-9][0-9]{0,2}(?:[ .-]?\([0-9]{1,4}\))?[ ./-]?[0-9]+(?:[ ./-][0-9]+)*
      | (?:1[ .-]?)?\([0-9]{2,5}\)[ .-]?[0-9]+(?:[ ./-][0-9]+)*
      | 0[0-9]+(?:[ ./-][0-9]{2,})+
      | (?:1[ .-])?[2-9][0-9]{2}(?P<sep>[ .-])[0-9]{3}(?P=sep)[0-9]{4}
    )""" + _END, re.VERBOSE)

# A phone candidate holding a date, or shaped like an IPv4 address, is neither.
_DATE = re.compile(r"(?<![0-9])(?:(?:19|20)[0-9]{2}[-./][0-9]{1,2}[-./][0-9]{1,2}"
                   r"|[0-9]{1,2}[-./][0-9]{1,2}[-./](?:19|20)[0-9]{2})(?![0-9])")
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")

# ISO 13616 IBAN registry: country -> IBAN length.
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16,
    "BG": 22, "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22,
    "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22,
    "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26,
    "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_LETTERS_TO_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})


def _count_digits(text: str) -> int:
    return sum(map(text.count, "0123456789"))


def _iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if _IBAN_LENGTH.get(s[:2]) != len(s) or not "02" <= s[2:4] <= "98":
        return False
    return int((s[4:] + s[:4]).translate(_LETTERS_TO_DIGITS)) % 97 == 1


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _longest_valid_prefix(candidate: str, sep: str, ok: Callable[[str], bool]) -> int:
    """Length of the longest prefix of `candidate`, cut at a `sep`, that passes
    `ok`, or 0. A grouped number may run into the next word or number ("BE68
    5390 0754 7034 Gent", "4111 1111 1111 1111 2025"); the regex cannot know
    where it ends, the check can."""
    if ok(candidate):
        return len(candidate)
    end = candidate.rfind(sep)
    while end > 0:
        if ok(candidate[:end]):
            return end
        end = candidate.rfind(sep, 0, end)
    return 0


def _phone_ok(candidate: str) -> int:
    """Length of the phone number at the start of `candidate`, or 0."""
    n = _count_digits(candidate)
    if n > 15 and candidate[0] == "+":
        # "+44 20 7946 0958 12 items": the number is the groups up to 15 digits
        n = end = 0
        for piece in candidate.split(" "):
            d = _count_digits(piece)
            if n + d > 15:
                break
            n += d
            end += len(piece) + 1
        candidate = candidate[:end - 1]
    if not 7 <= n <= 15 or _DATE.search(candidate) or _IPV4.fullmatch(candidate):
        return 0
    return len(candidate)


def _replace(pattern: re.Pattern, text: str, kind: str, token: str,
             valid_length: Callable[[str], int], counts: Counter) -> str:
    def one(m: re.Match) -> str:
        s = m.group()
        n = valid_length(s)
        if not n:
            return s
        counts[kind] += 1
        return token + s[n:]
    return pattern.sub(one, text)


def _iban_length(s: str) -> int:
    return _longest_valid_prefix(s, " ", _iban_ok)


def _card_length(s: str) -> int:
    sep = "-" if "-" in s else " "
    return _longest_valid_prefix(s, sep, _card_ok)


def scrub(text: str) -> tuple[str, Counter]:
    """`text` with PII replaced, and how many of each kind were replaced."""
    counts: Counter = Counter()
    if "@" in text:
        text, n = _EMAIL.subn("[EMAIL]", text)
        if n:
            counts["email"] = n
    digits = _count_digits(text)
    if digits >= 2:
        text = _replace(_IBAN, text, "iban", "[IBAN]", _iban_length, counts)
        if counts["iban"]:
            digits = _count_digits(text)
    if digits >= 13:
        text = _replace(_CARD, text, "card", "[CARD]", _card_length, counts)
        if counts["card"]:
            digits = _count_digits(text)
    if digits >= 7:
        text = _replace(_PHONE, text, "phone", "[PHONE]", _phone_ok, counts)
    return text, +counts


def scrub_value(value) -> tuple[object, Counter]:
    """A string scrubbed; a dict or list (an extraction task's JSON output)
    rebuilt with its values scrubbed, keys untouched; anything else as is."""
    if isinstance(value, str):
        return scrub(value)
    counts: Counter = Counter()
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            out[key], c = scrub_value(v)
            counts.update(c)
        return out, counts
    if isinstance(value, list):
        items = []
        for v in value:
            new, c = scrub_value(v)
            items.append(new)
            counts.update(c)
        return items, counts
    return value, counts


def scrub_example(ex: dict) -> tuple[dict, Counter]:
    """A copy of `ex` with "input" and "output" scrubbed; other keys (label,
    id, provenance) are copied as they are. `ex` is not changed."""
    out = dict(ex)
    counts: Counter = Counter()
    for key in ("input", "output"):
        if key in out:
            out[key], c = scrub_value(out[key])
            counts.update(c)
    return out, counts
