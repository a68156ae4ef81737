"""Strip credentials from values before they are written to a file or printed.

Used wherever llmguard persists or shows something a user passed in (failed batch items in a
checkpoint or dead-letter file, ``llmguard run`` messages): an API key in a request must never
end up on disk or in a terminal scrollback. Pure functions, no state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact", "redact_url"]

#: What a secret is replaced with.
REDACTED = "[redacted]"

# Key names that hold credentials: api_key, apiKey, x-api-key, authorization, password,
# access_token, client_secret, ... (case-insensitive, any separator).
_SECRET_KEY = re.compile(r"(api[-_]?key|authori[sz]ation|passw(or)?d|token|secret|credential)",
                         re.IGNORECASE)
# user-info in a URL: scheme://user:password@host -> scheme://[redacted]@host
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# A bearer token or an OpenAI-style key inside free text (an error message echoing a header).
_INLINE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+|\bsk-[A-Za-z0-9_-]{8,}")


def _is_secret_key(key: Any) -> bool:
    # "max_tokens"/"total_tokens" are counts, not credentials.
    return (isinstance(key, str) and bool(_SECRET_KEY.search(key))
            and not key.lower().endswith("_tokens") and key.lower() != "tokens")


def redact_url(url: str) -> str:
    """``url`` without the user-info part (``https://u:p@host/x`` -> ``https://[redacted]@host/x``)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", url)


def _redact_text(text: str) -> str:
    text = redact_url(text)
    return _INLINE.sub(lambda m: f"{m[1]}{REDACTED}" if m[1] else REDACTED, text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with credentials replaced by ``[redacted]``.

    Mappings lose the values of keys named like a credential (``api_key``, ``Authorization``,
    ``password``, ``*_token``, ``secret``...); strings lose URL user-info, bearer tokens and
    ``sk-...`` keys; lists and tuples are walked. Anything else is returned as it is.
    """
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {k: (REDACTED if _is_secret_key(k) and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value
