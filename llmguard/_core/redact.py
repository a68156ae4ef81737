"""Hide credentials in what llmguard prints or writes: labels, errors, logs, reprs, files.

``redact(value)`` replaces the values of keys named like a credential (``api_key``,
``authorization``, ``password``, ``secret``, ``token``, any case, ``-`` or ``_``, as part of a
longer name too: ``openai_api_key``, ``x-api-key``, ``access_token``; not ``max_tokens``) with ``"***"``, through
nested mappings, lists and tuples, and hides the password of URLs in strings.
``redact_url(url)`` hides a URL's user-info password (``redis://:***@host``). Pure functions:
they return new values and never change their input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "redact", "redact_url", "secret_key"]

#: What replaces a secret.
MASK = "***"

# "token" but not "tokens" (max_tokens, total_tokens are counts, not credentials)
_SECRET = re.compile(r"api[-_]?key|authori[sz]ation|passw(or)?d|secret|token(?!s)|credential",
                     re.IGNORECASE)
# scheme://user:password@  or  scheme://:password@  (the password is what is hidden)
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:)(?P<password>[^@\s/]*)@")


def secret_key(name: Any) -> bool:
    """True when a mapping key names a credential."""
    return isinstance(name, str) and _SECRET.search(name) is not None


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``***`` (unchanged without)."""
    return _USERINFO.sub(lambda m: f"{m['head']}{MASK if m['password'] else ''}@", url)


def redact(value: Any) -> Any:
    """A copy of ``value`` with credentials hidden (see the module doc); other values as given."""
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {k: MASK if secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value
