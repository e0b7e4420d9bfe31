"""Personal-data masking (the `pii` cleaning step and the serving safety filter): typed placeholders like <EMAIL>.

Run nfkc first (`tailor.data.normalize.nfkc`) so that full-width digits are found.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

# ---------------------------------------------------------------------------------------------
# pii

# Three passes, each run only when a cheap test says it can match: emails first (so that
# 13812345678@qq.com is one email, not a phone), then IPv6, then the digit-based kinds.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_NUMBERS = re.compile(r"""
 (?P<id_card>(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z]))
|(?P<bank_card>(?<![0-9.,-])[2-6][0-9]{3}(?:[ -]?[0-9]){9,15}(?![0-9]|[.,][0-9]))
|(?P<phone>\+[0-9]{1,3}[ -]?(?:\([0-9]{1,4}\)[ -]?)?[0-9]{1,4}(?:[ -]?[0-9]{2,4}){1,4}(?![0-9])
   |(?<![0-9(])\([0-9]{3}\)[ ]?[0-9]{3}[-. ][0-9]{4}(?![0-9])
   |(?<![0-9-])[0-9]{3}-[0-9]{3}-[0-9]{4}(?![0-9-])
   |(?<![0-9])1[3-9][0-9](?:[0-9]{8}|[ -][0-9]{4}[ -][0-9]{4})(?![0-9-])
   |(?<![0-9-])0[0-9]{2,3}-[0-9]{7,8}(?![0-9-]))
|(?P<ipv4>(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\.?[0-9]))
""", re.VERBOSE)
# Every digit-based kind has at least 7 characters of digits and separators.
_NUMBERS_HINT = re.compile(r"[0-9][0-9 .()+-]{5,}[0-9]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_VERSION_CUE = re.compile(r"(?:\bv|\bver\.?|\bversion|版本|版本号)[\s:：]*$", re.IGNORECASE)
PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "id_card": "<ID_CARD>", "bank_card": "<BANK_CARD>", "ip": "<IP>"}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i & 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _id_checksum(s: str) -> bool:
    total = sum(int(c) * w for c, w in zip(s, _ID_WEIGHTS))
    return "10X98765432"[total % 11] == s[17].upper()


def _bank_card(s: str) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or (" " in s and "-" in s):
        return False  # mixed separators are not how a card number is written
    return _luhn(digits)


def _classify(kind: str, m: re.Match) -> str | None:
    """The PII kind of a candidate match, or None when validation says it is an ordinary number."""
    s = m.group()
    if kind == "id_card":
        if _id_checksum(s):
            return "id_card"
        return "bank_card" if s.isdigit() and s[0] in "23456" and _luhn(s) else None
    if kind == "bank_card":
        return "bank_card" if _bank_card(s) else None
    if kind == "phone":
        return "phone" if 7 <= sum(c.isdigit() for c in s) <= 15 else None
    if kind == "ipv4":
        if any(int(o) > 255 for o in s.split(".")) or _VERSION_CUE.search(m.string[max(0, m.start() - 12):m.start()]):
            return None
        return "ip"
    if kind == "ipv6":
        if not any(c.isdigit() for c in s):
            return None  # "a::b", "dead::beef": code far more often than addresses
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            return None
        return "ip"
    return kind


def pii_masker(kinds: list[str], counts: dict) -> Callable[[str], str]:
    """Masker for the chosen kinds; counts masked items per kind into `counts`.

    Kinds: emails; phones (+country-code numbers, US (415) 555-0132 / 415-555-0132, Chinese mobiles
    13812345678 / 138 1234 5678, Chinese landlines 010-12345678); Chinese 18-digit resident IDs
    (checksum checked, X allowed); bank cards of 13-19 digits (first digit 2-6, Luhn checked, spaces
    or dashes allowed); IPv4 (octets 0-255, not right after a version cue such as "v", "version",
    "版本": "version 1.2.3.4" stays) and IPv6 (validated by `ipaddress`; one without any decimal
    digit, like C++'s "a::b", is taken for code). Dates, prices, order numbers and other digit runs
    that fail these checks are left alone; a 13-19 digit number that passes Luhn is masked.
    """
    wanted = set(kinds)

    def repl(m: re.Match, kind: str | None = None) -> str:
        found = _classify(kind or m.lastgroup, m)
        if found is None or found not in wanted:
            return m.group()
        counts[found] += 1
        return PLACEHOLDERS[found]

    def mask(text: str) -> str:
        if "@" in text:
            text = _EMAIL.sub(lambda m: repl(m, "email"), text)
        if ":" in text and _IPV6_HINT.search(text):
            text = _IPV6.sub(lambda m: repl(m, "ipv6"), text)
        if _NUMBERS_HINT.search(text):
            text = _NUMBERS.sub(repl, text)
        return text

    return mask
