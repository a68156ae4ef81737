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

__all__ = ["REDACTED", "redact", "redact_url", "secret_key"]

#: What replaces a secret.
REDACTED = "***"

# Key names that hold credentials, any case, "-" or "_", as part of a longer name too
# (openai_api_key, x-api-key, access_token, client_secret); "token" but not "tokens"
# (max_tokens, total_tokens are counts).
_SECRET = re.compile(r"api[-_]?key|authori[sz]ation|passw(or)?d|secret|token(?!s)|credential",
                     re.IGNORECASE)
# scheme://user:password@  or  scheme://:password@  (the password is what is hidden)
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:)(?P<password>[^@\s/]*)@")
# A bearer token or an OpenAI-style key inside free text (an error message echoing a header).
_INLINE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+|\bsk-[A-Za-z0-9_-]{8,}")


def secret_key(name: Any) -> bool:
    """True when a mapping key names a credential."""
    return isinstance(name, str) and _SECRET.search(name) is not None


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``***`` (unchanged without)."""
    return _USERINFO.sub(lambda m: f"{m['head']}{REDACTED if m['password'] else ''}@", url)


def _redact_text(text: str) -> str:
    if "://" in text:
        text = redact_url(text)
    return _INLINE.sub(lambda m: f"{m[1]}{REDACTED}" if m[1] else REDACTED, text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with credentials hidden: values of credential-named keys (through
    nested mappings, lists and tuples), URL passwords, bearer tokens and ``sk-...`` keys in text.
    Anything else is returned as it is."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value
