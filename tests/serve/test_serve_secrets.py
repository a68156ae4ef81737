"""No credential leaves the gateway: not in error bodies (even when the upstream echoes its key),
not in anything it prints or logs, at the most verbose log level with the access log on."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from serve_helpers import ChildServer, ThreadServer, chat, write_config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

pytestmark = pytest.mark.looptime(False)

UPSTREAM_KEY = "sk-upstream-very-secret-0123456789"
TENANT_KEY = "tenant-very-secret-key-42"


async def leaky(request: Request) -> JSONResponse:
    """An upstream that rejects with its caller's key in the message, as some providers do."""
    auth = request.headers.get("authorization", "")
    body = await request.json()
    status = 401 if body.get("model") == "auth" else 500
    return JSONResponse({"error": {"message": f"Incorrect API key provided: {auth[7:]} "
                                              f"(header was {auth})"}}, status)


class _App:
    def __init__(self) -> None:
        app = Starlette(routes=[Route("/v1/chat/completions", leaky, methods=["POST"])])
        app.state.gateway = None
        self.app = app


def test_no_credential_in_bodies_or_output(tmp_path) -> None:
    with ThreadServer(_App().app) as upstream:
        config = write_config(tmp_path, f"""
[models.auth]
provider = "openai"
base_url = "{upstream.url}/v1"
api_key_env = "SERVE_TEST_LEAKY_KEY"
retries = 0

[models.broken]
provider = "openai"
base_url = "{upstream.url}/v1"
api_key_env = "SERVE_TEST_LEAKY_KEY"
retries = 0

[tenants.t]
api_key_sha256 = "{hashlib.sha256(TENANT_KEY.encode()).hexdigest()}"
""")
        server = ChildServer("--config", str(config), "--access-log", "--log-level", "debug",
                             env={"SERVE_TEST_LEAKY_KEY": UPSTREAM_KEY})
        with server:
            headers = {"authorization": f"Bearer {TENANT_KEY}"}
            bodies = []
            for model in ("auth", "broken"):
                r = httpx.post(server.url + "/v1/chat/completions", json=chat(model),
                               headers=headers)
                bodies.append(r.text)
                assert r.status_code == 502 if model == "auth" else 500
                assert "***" in r.text or "[redacted]" in r.text  # the key's place, hidden
            wrong = httpx.post(server.url + "/v1/chat/completions", json=chat("auth"),
                               headers={"authorization": f"Bearer {TENANT_KEY}x"})
            assert wrong.status_code == 401
            bodies.append(wrong.text)
            server.stop()
            output = server.output()
    assert "POST /v1/chat/completions" in output  # the access log did run
    for text in [*bodies, output]:
        assert UPSTREAM_KEY not in text and "0123456789" not in text
        assert TENANT_KEY not in text
