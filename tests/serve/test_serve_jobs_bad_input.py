"""Bad input to the jobs routes, as a table: each gets its status and an OpenAI-style body."""

from __future__ import annotations

import json

import httpx
import pytest
from jobs_helpers import AUTH_A, AUTH_B, SECRET, config, requests
from serve_helpers import HANG_GUARD, served, write_config

pytestmark = pytest.mark.looptime(False)

JOB = {"requests": requests(1)}
CASES = [
    ("unknown job", "GET", "/v1/jobs/job_nope", None, AUTH_A, 404, "job_not_found"),
    ("unknown job events", "GET", "/v1/jobs/job_nope/events", None, AUTH_A, 404,
     "job_not_found"),
    ("unknown job cancel", "POST", "/v1/jobs/job_nope/cancel", None, AUTH_A, 404,
     "job_not_found"),
    ("no key", "POST", "/v1/jobs", JOB, {}, 401, "invalid_api_key"),
    ("malformed JSON", "POST", "/v1/jobs", b'{"requests": [', AUTH_A, 400, "invalid_json"),
    ("empty body", "POST", "/v1/jobs", b"", AUTH_A, 400, "invalid_json"),
    ("requests not a list", "POST", "/v1/jobs", {"requests": "x"}, AUTH_A, 400,
     "invalid_request"),
    ("no requests", "POST", "/v1/jobs", {"requests": []}, AUTH_A, 400, "empty_job"),
    ("unknown field", "POST", "/v1/jobs", {**JOB, "webhook": "x"}, AUTH_A, 400,
     "invalid_request"),
    ("bad priority", "POST", "/v1/jobs", {**JOB, "priority": "urgent"}, AUTH_A, 400,
     "invalid_priority"),
    ("metadata not an object", "POST", "/v1/jobs", {**JOB, "metadata": [1]}, AUTH_A, 400,
     "invalid_request"),
    ("oversize body", "POST", "/v1/jobs", {"requests": requests(1), "metadata": {
        "pad": "x" * 9000}}, AUTH_A, 413, "request_too_large"),
    ("too many lines", "POST", "/v1/jobs", {"requests": requests(51)}, AUTH_A, 413,
     "too_many_lines"),
    ("callback to loopback", "POST", "/v1/jobs", {**JOB, "callback_url":
     "http://127.0.0.1:9/hook"}, AUTH_A, 400, "invalid_callback_url"),
    ("callback to a private network", "POST", "/v1/jobs", {**JOB, "callback_url":
     "http://10.1.2.3/hook"}, AUTH_A, 400, "invalid_callback_url"),
    ("callback to link-local metadata", "POST", "/v1/jobs", {**JOB, "callback_url":
     "http://169.254.169.254/latest"}, AUTH_A, 400, "invalid_callback_url"),
    ("callback to localhost by name", "POST", "/v1/jobs", {**JOB, "callback_url":
     "http://localhost:8080/"}, AUTH_A, 400, "invalid_callback_url"),
    ("callback not http", "POST", "/v1/jobs", {**JOB, "callback_url": "file:///etc/passwd"},
     AUTH_A, 400, "invalid_callback_url"),
    ("callback without a tenant secret", "POST", "/v1/jobs", {**JOB, "callback_url":
     "http://93.184.215.14/hook"}, AUTH_B, 400, "webhooks_not_configured"),
    ("bad wait", "GET", "/v1/jobs/job_nope?wait=abc", None, AUTH_A, 400, "invalid_request"),
    ("wait too long", "GET", "/v1/jobs/job_nope?wait=3600", None, AUTH_A, 400,
     "invalid_request"),
    ("bad limit", "GET", "/v1/jobs?limit=0", None, AUTH_A, 400, "invalid_request"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import os

    os.environ["JOBS_TEST_SECRET"] = SECRET
    path = write_config(tmp_path_factory.mktemp("jobs"), config())
    with served(path) as server:
        yield server
    del os.environ["JOBS_TEST_SECRET"]


@pytest.mark.parametrize(("case", "method", "path", "body", "headers", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input(server, case, method, path, body, headers, status, code) -> None:
    content = body if isinstance(body, bytes) else (None if body is None else
                                                    json.dumps(body).encode())
    with httpx.Client(base_url=server.url, timeout=HANG_GUARD) as http:
        r = http.request(method, path, content=content,
                         headers={**headers, "content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert SECRET not in r.text
