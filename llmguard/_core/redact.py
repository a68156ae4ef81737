"""Hide credentials in what llmguard prints or writes: labels, errors, logs, reprs, files.

Used wherever llmguard persists or shows something a user passed in (failed batch items in a
checkpoint or dead-letter file, ``llmguard run`` messages, Fallback labels, Redis URLs): an API
key must never end up on disk or in a terminal scrollback. Pure functions: they return new
values and never change their input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "add_secret", "hide_secrets", "redact", "redact_logs", "redact_url",
           "secret_key"]

#: What replaces a secret.
REDACTED = "***"

# Key names that hold credentials, any case, "-" or "_", as part of a longer name too
# (openai_api_key, x-api-key, access_token, client_secret); "token" but not "tokens"
# (max_tokens, total_tokens are counts).
_SECRET = re.compile(r"api[-_]?key|authori[sz]ation|passw(or)?d|secret|token(?!s)|credential",
                     re.IGNORECASE)
# scheme://user:password@  or  scheme://:password@  (the password is what is hidden)
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:)(?P<password>[^@\s/]*)@")
# user:password@ at the start of a url given without its scheme (a mistake its error names)
_BARE_USERINFO = re.compile(r"^(?P<head>[^/@:\s]*:)(?P<password>[^@\s/]*)@")
# A bearer token or an OpenAI-style key inside free text (an error message echoing a header).
_INLINE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+|\bsk-[A-Za-z0-9_-]{8,}")


#: Exact secrets llmguard was handed (``llmguard run``'s API key): hidden wherever they appear,
#: whatever their shape. Patterns catch ``sk-...`` and bearer headers; a provider that echoes a
#: ``gsk_...`` or ``AIza...`` key in an error matches none of them, but the key itself is known.
#: Longest first, so a secret containing another is hidden whole.
_known: tuple[str, ...] = ()
#: Shorter strings are not hidden: no real key is that short, and hiding every "abc" in every
#: message would make errors unreadable.
_SHORTEST = 4


def add_secret(value: Any) -> None:
    """Hide ``value`` (an API key) from now on wherever :func:`redact` is used, in this process."""
    global _known
    if isinstance(value, str) and len(value.strip()) >= _SHORTEST and value not in _known:
        _known = tuple(sorted((*_known, value.strip()), key=len, reverse=True))


def secret_key(name: Any) -> bool:
    """True when a mapping key names a credential."""
    return isinstance(name, str) and _SECRET.search(name) is not None


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``***`` (unchanged without),
    its scheme forgotten too."""
    pattern = _USERINFO if "://" in url else _BARE_USERINFO
    return pattern.sub(lambda m: f"{m['head']}{REDACTED if m['password'] else ''}@", url)


def _redact_text(text: str) -> str:
    for secret in _known:
        while secret in text:  # a replacement can make a new one ("x**" in "xx**"); each shrinks
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = redact_url(text)
    return _INLINE.sub(lambda m: f"{m[1]}{REDACTED}" if m[1] else REDACTED, text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with credentials hidden: values of credential-named keys (through
    nested mappings, lists and tuples), URL passwords, bearer tokens, ``sk-...`` keys and every
    secret given to :func:`add_secret`, in text. Anything else is returned as it is."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value


def redact_logs() -> None:
    """Hide the :func:`add_secret` secrets in every log record of this process, message and
    traceback alike (an application's call: ``llmguard run`` makes it; a library leaves the
    process's logging alone). Installed once, as a log record factory, so records of every
    logger are covered whatever handlers the process has."""
    import logging  # here: `import llmguard` stays light

    previous = logging.getLogRecordFactory()
    if getattr(previous, "llmguard_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _known:
            try:
                message = record.getMessage()
            except Exception:  # a broken format: logging reports it itself
                return record
            record.msg, record.args = _redact_text(message), None
            if record.exc_info and record.exc_info[1] is not None:
                import traceback

                record.exc_text = _redact_text("".join(
                    traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    factory.llmguard_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def hide_secrets(*values: Any) -> None:
    """An application's call (``llmguard run``): the exact ``values`` (its API keys; None and
    blanks skipped) are hidden from now on in everything redacted and in every log record."""
    for value in values:
        add_secret(value)
    redact_logs()
