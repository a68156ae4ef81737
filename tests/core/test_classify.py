"""classify(): real SDK exceptions, status codes, headers and messages to a FailureKind."""

import asyncio

import httpx
import openai
import pytest

from llmguard import FailureKind, classify
from llmguard._core.classify import retry_after_from_headers

REQUEST = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")


def openai_error(cls, status: int, message: str, headers=None, body=None):
    response = httpx.Response(status, headers=headers or {}, request=REQUEST)
    return cls(message, response=response, body=body)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (openai_error(openai.RateLimitError, 429, "Rate limit reached"), FailureKind.RATE_LIMITED),
        (openai_error(openai.RateLimitError, 429, "You exceeded your current quota",
                      body={"code": "insufficient_quota"}), FailureKind.QUOTA_EXHAUSTED),
        (openai_error(openai.BadRequestError, 400,
                      "This model's maximum context length is 8192 tokens"),
         FailureKind.CONTEXT_WINDOW),
        (openai_error(openai.BadRequestError, 400, "Invalid 'temperature'"),
         FailureKind.BAD_REQUEST),
        (openai_error(openai.AuthenticationError, 401, "Incorrect API key"), FailureKind.AUTH),
        (openai_error(openai.InternalServerError, 500, "oops"), FailureKind.SERVER_ERROR),
        (openai_error(openai.InternalServerError, 503, "The engine is currently overloaded"),
         FailureKind.OVERLOADED),
        (openai.APITimeoutError(request=REQUEST), FailureKind.TIMEOUT),
        (openai.APIConnectionError(request=REQUEST), FailureKind.CONNECTION),
        (httpx.ConnectError("refused"), FailureKind.CONNECTION),
        (httpx.ReadTimeout("slow"), FailureKind.TIMEOUT),
        (asyncio.TimeoutError(), FailureKind.TIMEOUT),
        (ValueError("mine"), FailureKind.UNKNOWN),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.value,
)
def test_real_exceptions_classify(error: BaseException, kind: FailureKind) -> None:
    """Exceptions built the way the openai SDK and httpx build them map to their kind."""
    assert classify(error).kind is kind


def test_retry_after_from_every_header_form() -> None:
    """retry-after-ms, retry-after in seconds and as an HTTP date are all understood."""
    assert retry_after_from_headers({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_from_headers({"Retry-After": "3"}) == 3.0
    assert retry_after_from_headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"},
                                    now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_from_headers({"retry-after": "soon"}) is None
    error = openai_error(openai.RateLimitError, 429, "slow down", headers={"retry-after": "2"})
    failure = classify(error)
    assert (failure.retry_after, failure.status, failure.retryable) == (2.0, 429, True)


def test_x_should_retry_false_makes_it_final() -> None:
    """The server's x-should-retry: false overrides a retryable status."""
    error = openai_error(openai.InternalServerError, 500, "oops",
                         headers={"x-should-retry": "false"})
    assert not classify(error).retryable


def test_structured_codes_are_read_not_only_messages() -> None:
    """`exc.code` and `body["code"]` / `body["error"]["code"]` decide the kind even when the
    message says nothing about it (a 429 insufficient_quota is final, not a slow-down)."""
    from llmguard import FailureKind, classify

    class APIError(Exception):
        def __init__(self, message: str, status_code: int, code=None, body=None) -> None:
            super().__init__(message)
            self.status_code, self.code, self.body = status_code, code, body

    assert classify(APIError("429", 429, code="insufficient_quota")).kind is FailureKind.QUOTA_EXHAUSTED
    assert classify(APIError("429", 429, body={"code": "insufficient_quota"})).kind is FailureKind.QUOTA_EXHAUSTED
    nested = APIError("bad", 400, body={"error": {"code": "context_length_exceeded"}})
    assert classify(nested).kind is FailureKind.CONTEXT_WINDOW
    assert classify(APIError("429", 429, code="rate_limit_exceeded")).kind is FailureKind.RATE_LIMITED


def test_transport_errors_of_the_cli_provider_are_classified_and_retryable() -> None:
    """Connection failures, provider timeouts and a non-JSON 502 keep a retryable kind."""
    from llmguard import FailureKind, classify
    from llmguard._upstream.errors import HTTPError, ProviderTimeout, TransportError

    assert classify(TransportError("refused")).kind is FailureKind.CONNECTION
    assert classify(ProviderTimeout("slow")).kind is FailureKind.TIMEOUT
    html = HTTPError("HTTP 502 from x: <html>Bad Gateway</html>", status_code=502, headers={})
    failure = classify(html)
    assert failure.kind is FailureKind.SERVER_ERROR and failure.status == 502 and failure.retryable


@pytest.mark.parametrize("headers", [{"retry-after": "inf"}, {"Retry-After": "1e400"},
                                     {"retry-after": "Infinity"}, {"retry-after-ms": "inf"},
                                     {"retry-after": "nan"}, {"retry-after-ms": "NaN"}])
def test_a_retry_after_that_is_no_number_of_seconds_is_unreadable(headers) -> None:
    """Retry-After "inf" (or one past a float's range) asked every Retry and RateLimit to wait
    forever; "nan" read as 0 s: neither is a number of seconds, so neither is read."""
    assert retry_after_from_headers(headers) is None
    error = type("Refused", (Exception,), {"status_code": 429, "retry_after": float("inf")})()
    assert classify(error).retry_after is None


@pytest.mark.parametrize("date", ["Tue Dec  8 03:00:30 2026",  # asctime: an HTTP-date too
                                  "Tue, 08 Dec 2026 03:00:30 -0000"])
def test_a_retry_after_date_without_its_zone_is_gmt(date, monkeypatch) -> None:
    """HTTP dates are GMT, named or not: one without its zone was read in the machine's local
    time (in New York, a 30 s Retry-After waited 5 h 30 s)."""
    import calendar
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        now = calendar.timegm((2026, 12, 8, 3, 0, 0))
        assert retry_after_from_headers({"retry-after": date}, now=now) == 30.0
    finally:
        monkeypatch.undo()
        time.tzset()
