"""Check digits that tell a real identifier from a number of the same shape.

presidio-analyzer checks card numbers (Luhn) and IBANs (ISO 7064 mod 97-10) itself; the Chinese
resident identity number's check character (GB 11643-1999, ISO 7064 mod 11-2) is checked here.
"""

from __future__ import annotations

from datetime import date

# weight of each of the first 17 characters: 2**(17 - i) mod 11
_CN_ID_WEIGHTS = tuple(2 ** (17 - i) % 11 for i in range(17))
_CN_ID_CHECK = "10X98765432"  # the check character for each value of (sum of weighted digits) mod 11


def cn_resident_id_valid(value: str) -> bool:
    """True when ``value`` (18 characters, spaces and hyphens ignored) is a well-formed Chinese
    resident identity number: a birth date that exists and is not in the future (characters 7-14),
    and the GB 11643-1999 check character (the 18th: a digit or X)."""
    s = value.replace(" ", "").replace("-", "").upper()
    if len(s) != 18 or not s[:17].isdigit() or not (s[17].isdigit() or s[17] == "X"):
        return False
    try:
        born = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if not date(1850, 1, 1) <= born <= date.today():
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _CN_ID_WEIGHTS))
    return _CN_ID_CHECK[total % 11] == s[17]
