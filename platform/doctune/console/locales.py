"""The console's UI text in English and Chinese, keyed by element name ``"<tab>.<name>"``
(:meth:`doctune.console.context.Console.add`). The language switch at the top relabels every
registered element live; an element with no entry here keeps the text it was built with."""

from __future__ import annotations

LANGUAGES = {"en": "English", "zh": "中文"}

LOCALES: dict[str, dict[str, str]] = {
    "top.api_key": {"en": "API key", "zh": "API 密钥"},
    "top.sign_in": {"en": "Sign in", "zh": "登录"},
    "top.sign_out": {"en": "Sign out", "zh": "退出"},
    "top.language": {"en": "Language", "zh": "语言"},
}


def text(name: str, lang: str) -> str | None:
    """The element's text in ``lang`` (falling back to English), or None when it has no entry."""
    entry = LOCALES.get(name)
    return None if entry is None else entry.get(lang) or entry.get("en")
