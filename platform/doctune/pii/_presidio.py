"""The presidio-analyzer engine doctune runs, offline: pattern recognizers, check digits, no model.

Imported on first use only (``doctune.pii._redactor.find_pii``): presidio imports spaCy, and spaCy
imports torch, seconds that an API process should not pay unless a dataset is redacted.

Offline by construction:

* presidio's default NLP engine loads a spaCy model (``en_core_web_lg``) and downloads it when it
  is missing. :class:`_BlankSpacy` uses spaCy's blank pipelines instead (a tokenizer and nothing
  else: nothing to download); the lower-cased words stand in for lemmas so that presidio's context
  words (``ssn``, ``phone``, ``card``) still raise a weak match's score. With no NER model there is
  no statistical PERSON recognizer: names come from the title and label heuristics below.
* presidio's e-mail recognizer checks the domain with ``tldextract``, whose first call fetches the
  public suffix list over the network; :class:`_Email` checks the domain's shape itself.

English and other Latin-script text is analysed as ``en``; Chinese name heuristics as ``zh`` on the
text itself (``doctune.pii._redactor`` hands ``en`` a copy in which CJK characters are spaces).
"""

from __future__ import annotations

import logging

import regex
import spacy
from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
from presidio_analyzer.nlp_engine import NlpArtifacts, SlimSpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                      PhoneRecognizer, UsSsnRecognizer)

from doctune.pii._checks import cn_resident_id_valid

# presidio logs two INFO lines for every text it analyses: a dataset's worth would flood the API's log
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)

LANGUAGES = ("en", "zh")
MIN_SCORE = 0.4  # presidio's score below which a match is dropped (a weak pattern without its context words)

# where a number written without a country code is tried as a national number (libphonenumber's
# metadata decides whether it is valid there); a number written with +CC is found whatever these are
PHONE_REGIONS = ("CN", "US", "GB", "CA", "AU", "IN", "DE", "FR", "HK", "TW", "SG")

# presidio's entity names -> doctune's types (doctune.pii.PII_TYPES)
DOCTUNE_TYPE = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CN_MOBILE": "PHONE", "CREDIT_CARD": "CARD",
                "IBAN_CODE": "IBAN", "US_SSN": "NATIONAL_ID", "CN_RESIDENT_ID": "NATIONAL_ID", "PERSON": "PERSON"}

_CASE_SENSITIVE = regex.DOTALL | regex.MULTILINE
TITLES = ("Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Professor", "Sir", "Dame", "Lady", "Lord", "Madam", "Mme",
          "Mlle", "Herr", "Frau")
_WORD = r"[A-Z][a-zA-Z]+(?:['’-][A-Z][a-zA-Z]+)*"  # Smith, McDonald, O'Brien, Smith-Jones (not the 's of Blair's)
LATIN_NAME = rf"(?:[A-Z]\.\s?)*{_WORD}(?:[ \t]+(?:[A-Z]\.\s?)*{_WORD}){{0,2}}"
# the 100-odd commonest Chinese surnames and the compound ones; characters that are more often
# ordinary words right before an honorific (和, 于, 向, ...) are left out
CN_SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁沈任姚卢"
               "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵钱严覃武戴莫孔汤")
CN_COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙", "夏侯", "公孙")
CN_HONORIFICS = ("先生", "女士", "小姐", "太太", "同学", "老师", "教授", "医生", "律师", "经理")


class _BlankSpacy(SlimSpacyNlpEngine):
    """Tokens for presidio's context words from spaCy's blank pipelines; loads and downloads no model."""

    def __init__(self) -> None:
        super().__init__(models=[{"lang_code": lang, "model_name": f"blank:{lang}"} for lang in LANGUAGES],
                         auto_download=False)

    def load(self) -> None:
        self.nlp = {lang: spacy.blank(lang) for lang in LANGUAGES}

    def _doc_to_nlp_artifact(self, doc, language: str) -> NlpArtifacts:
        return NlpArtifacts(entities=[], tokens=doc, tokens_indices=[t.idx for t in doc],
                            lemmas=[t.lower_ for t in doc], nlp_engine=self, language=language, scores=[])


class _Email(EmailRecognizer):
    """presidio's e-mail pattern; the domain must end in a dot and two or more letters (checked here,
    not with tldextract, which fetches the public suffix list over the network on its first call)."""

    def validate_result(self, pattern_text: str) -> bool:
        tld = pattern_text.rpartition("@")[2].rpartition(".")[2]
        return len(tld) >= 2 and tld.isalpha()


class _ChineseResidentId(PatternRecognizer):
    """18-character Chinese resident identity numbers whose birth date exists and whose check
    character is right (GB 11643-1999); a near miss stays."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="CN_RESIDENT_ID", supported_language="en", context=["id", "identity", "resident"],
            patterns=[Pattern("CN resident ID", r"\b[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
                                                r"\d{3}[\dX]\b", 0.3)])

    def validate_result(self, pattern_text: str) -> bool:
        return cn_resident_id_valid(pattern_text)


def _recognizers() -> list:
    card_2_series = Pattern("Mastercard 2-series", r"\b2[2-7]\d{2}(?:[- ]?\d{4}){3}\b", 0.3)
    return [
        _Email(),
        PhoneRecognizer(supported_regions=PHONE_REGIONS),
        PatternRecognizer(supported_entity="CN_MOBILE", name="ChineseMobileRecognizer", patterns=[
            Pattern("CN mobile", r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)", 0.5)]),
        CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, card_2_series]),
        IbanRecognizer(),
        UsSsnRecognizer(),
        _ChineseResidentId(),
        PatternRecognizer(supported_entity="PERSON", name="TitledNameRecognizer", global_regex_flags=_CASE_SENSITIVE,
                          patterns=[Pattern("title + capitalised name",
                                            rf"(?<=\b(?:{'|'.join(TITLES)})\.?[ \t]{{1,3}}){LATIN_NAME}", 0.6),
                                    Pattern("name label", rf"(?<=\b(?:[Nn]ame|NAME)[ \t]?:[ \t]{{0,3}}){LATIN_NAME}", 0.6)]),
        PatternRecognizer(supported_entity="PERSON", name="ChineseNameRecognizer", supported_language="zh",
                          global_regex_flags=_CASE_SENSITIVE, patterns=[
                              Pattern("surname + honorific",
                                      rf"(?:{'|'.join(CN_COMPOUND_SURNAMES)}|[{CN_SURNAMES}])[\u4e00-\u9fff]{{0,2}}"
                                      rf"(?=(?:{'|'.join(CN_HONORIFICS)}))", 0.6),
                              Pattern("name label", rf"(?<=姓名[ \t]?[:：][ \t]{{0,3}})(?:[\u4e00-\u9fff·]{{2,4}}|{LATIN_NAME})",
                                      0.6)]),
    ]


def build_analyzer() -> AnalyzerEngine:
    """presidio's AnalyzerEngine with doctune's recognizers only (none that needs a model)."""
    registry = RecognizerRegistry(supported_languages=list(LANGUAGES))
    for recognizer in _recognizers():
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=_BlankSpacy(), supported_languages=list(LANGUAGES),
                          default_score_threshold=MIN_SCORE)
