"""The gateway sends an upstream's answer as the upstream's own bytes when nothing replaced the
parsed answer (a pass-through proxy's fidelity, and no second JSON encoding); a cache hit (a
copy) is encoded as before."""

import json

import httpx
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from serve_helpers import ThreadServer, chat, served, write_config

#: Spaced the way our compact encoder never writes it.
ANSWER = (b'{"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": '
          b'[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", '
          b'"content": "hi"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, '
          b'"total_tokens": 4}}')


def test_an_upstream_answer_is_sent_as_its_own_bytes(tmp_path, monkeypatch) -> None:
    """First request: the upstream's bytes exactly; the repeat, a cache hit: the same JSON."""
    async def answer(request):
        await request.body()
        return Response(ANSWER, media_type="application/json")

    upstream = Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST"])])
    upstream.state.gateway = None
    monkeypatch.setenv("ANSWER_BYTES_KEY", "none")
    with ThreadServer(upstream) as up:
        config = write_config(tmp_path, f"""[models.gpt]
provider = "openai"
base_url = "{up.url}/v1"
api_key_env = "ANSWER_BYTES_KEY"
timeout = 30
cache_ttl = 60
""")
        with served(config) as server:
            first = httpx.post(server.url + "/v1/chat/completions", json=chat("gpt"))
            again = httpx.post(server.url + "/v1/chat/completions", json=chat("gpt"))
    assert first.status_code == again.status_code == 200
    assert first.content == ANSWER
    assert again.content != ANSWER and again.json() == json.loads(ANSWER)
