"""Which quota a 429 names, read from its message: a refusal that says "tokens" is about the
token quota, whatever our own counts make look fullest.

Providers say it in words, not headers:

* OpenAI: ``Rate limit reached for gpt-4o in organization org-... on tokens per min (TPM):
  Limit 30000, Used 29937, Requested 385.`` (``requests per min (RPM)``, ``tokens per day
  (TPD)``); formerly ``on tokens per min. Limit: 10000 / min.``;
* Anthropic: ``This request would exceed the rate limit for your organization of 20,000 input
  tokens per minute.`` (``output tokens``), formerly ``Number of request tokens has exceeded
  your per-minute rate limit``;
* Azure OpenAI: ``... have exceeded token rate limit of your current ... pricing tier`` (``call
  rate limit``);
* :mod:`llmguard.testing`'s servers: ``Rate limit reached for tokens (fixed window).``,
  ``Rate limit reached for tokens per minute (limit 10000).``

A message naming both units (``requests, tokens``; LiteLLM's ``Crossed TPM / RPM``) or none
names nothing: the caller falls back on its own counts. A limit per day (``TPD``, ``RPD``)
is not a per-minute quota's: it is named so that nothing per minute is learned from it.

Pure functions of the exception: tested directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Named", "named"]


@dataclass(frozen=True, slots=True)
class Named:
    """The quota a 429 names: ``tokens`` (else requests), the ``part`` of the tokens
    (``"input"``, ``"output"``, or ``""`` for all), the ``limit`` the message gives (None: it
    gives none) and whether it is a per-``minute`` quota (False: per day, second or hour)."""

    tokens: bool
    part: str = ""
    limit: int | None = None
    minute: bool = True

    @property
    def unit(self) -> str:
        return f"{self.part} tokens".lstrip() if self.tokens else "requests"


_NUMBER = r"(\d[\d,]*)(?:\.\d+)?"
#: ``(input|output)? (tokens|requests) per (min|minute|day|...)`` (OpenAI's, Anthropic's, ours).
_PER = re.compile(r"(?:\b(input|output)[ _-]?)?\b(tokens|requests)\s+per\s+"
                  r"(min(?:ute)?|day|hour|sec(?:ond)?)\b")
#: OpenAI's abbreviations in parentheses: ``(TPM)``, ``(RPM)``, ``(TPD)``, ``(RPD)``.
_ABBREVIATION = re.compile(r"\((i|o)?(t|r)p(m|d)\)")
#: ``Rate limit reached for tokens`` (ours, OpenAI's former); Azure's ``token rate limit``;
#: Anthropic's former ``Number of request tokens`` / ``Number of requests``.
_OTHER = re.compile(r"rate limit reached for (?:(input|output)-)?(tokens|requests)\b(?!,)"
                    r"|\b(token|call|request)s? rate limit"
                    r"|number of (request tokens|requests|(?:input|output) tokens)\b")
#: ``Limit 10000``, ``Limit: 10000 / min``, ``(limit 10000)`` after the unit.
_LIMIT_AFTER = re.compile(r"^[^;]{0,20}?\blimit:?\s+" + _NUMBER)
#: ``of 20,000 input tokens per minute`` before it (Anthropic's).
_LIMIT_BEFORE = re.compile(r"\bof\s+" + _NUMBER + r"\s+$")


def _message(exc: BaseException) -> str:
    return str(exc).lower()


def named(exc: BaseException) -> Named | None:
    """The quota ``exc`` (a 429) names in its message, or None when it names none or both."""
    text = _message(exc)
    seen: list[Named] = []
    for match in _PER.finditer(text):
        part, unit, period = match.groups()
        seen.append(Named(unit == "tokens", part or "", _limit(text, match.start(), match.end()),
                          period.startswith("min")))
    for match in _ABBREVIATION.finditer(text):
        part, unit, period = match.groups()
        seen.append(Named(unit == "t", {"i": "input", "o": "output"}.get(part or "", ""),
                          _limit(text, match.start(), match.end()), period == "m"))
    for match in _OTHER.finditer(text):
        part, unit, azure, number = match.groups()
        if unit:
            seen.append(Named(unit == "tokens", part or "",
                              _limit(text, match.start(), match.end())))
        elif azure:
            seen.append(Named(azure == "token"))
        else:
            seen.append(Named(number != "requests", number.split()[0] if "put" in number else ""))
    if len({(each.tokens, each.part) for each in seen}) != 1:
        return None
    limits = [each.limit for each in seen if each.limit is not None]
    return Named(seen[0].tokens, seen[0].part, limits[0] if limits else None,
                 all(each.minute for each in seen))


def _limit(text: str, start: int, end: int) -> int | None:
    """The number the message gives as the limit right after ``text[start:end]`` (a unit) or
    right before it ("of 20,000 ..."), or None."""
    after = _LIMIT_AFTER.match(text[end:end + 40])
    before = _LIMIT_BEFORE.search(text[max(0, start - 30):start])
    for match in (after, before):
        if match is not None:
            value = int(match.group(1).replace(",", ""))
            if value > 0:
                return value
    return None
