"""Personal data (PII) in a tenant's text, found and replaced by typed placeholders.

Called by ``doctune.services.redaction`` when a dataset is uploaded with ``redact_pii`` (or its
tenant has the setting on), before anything is stored; task plugins receive a :class:`Redactor` in
their optional ``redact_record`` hook. Detection is presidio-analyzer's pattern recognizers with
their check digits, plus doctune's own for China, all offline (``doctune.pii._presidio``):

=============  ===============  ==========================================================================
type           placeholder      found by
=============  ===============  ==========================================================================
EMAIL          ``<EMAIL>``      presidio's e-mail pattern; the domain ends in a dot and 2+ letters
PHONE          ``<PHONE>``      presidio's PhoneRecognizer (libphonenumber: numbers valid in CN, US, GB,
                                CA, AU, IN, DE, FR, HK, TW, SG, and any number written with +CC), and
                                Chinese mobile numbers (1[3-9]X XXXX XXXX, optionally +86)
CARD           ``<CARD>``       presidio's card patterns (and Mastercard's 2-series), Luhn-checked
IBAN           ``<IBAN>``       presidio's IbanRecognizer: the country's format and the mod-97 check
NATIONAL_ID    ``<NATIONAL_ID>``  US SSN (presidio: AAA-GG-SSSS, never-issued numbers refused; 9 bare digits
                                only after "SSN" or "social security"); Chinese resident identity
                                number (18 characters, a real birth date, the GB 11643-1999 check)
PERSON         ``<PERSON>``     heuristics, not a model: a capitalised name after a title (Mr, Ms, Dr,
                                Prof, ...) or after "Name:"; a Chinese surname with up to two more
                                characters before 先生, 女士, 小姐, 老师, ... or after 姓名：
=============  ===============  ==========================================================================

What is not found: names without such a cue (no NER model ships for person names, and presidio's
spaCy and transformers recognizers need models downloaded from a hub), numbers that fail their
check, phone numbers of other regions written without +CC, 15-digit Chinese IDs, street addresses.
"""

from doctune.pii._checks import cn_resident_id_valid
from doctune.pii._redactor import PII_TYPES, Finding, Redactor, find_pii, placeholder

__all__ = ["PII_TYPES", "Finding", "Redactor", "cn_resident_id_valid", "find_pii", "placeholder"]
