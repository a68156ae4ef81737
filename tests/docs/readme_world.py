"""The reader's world, in which ``tests/docs/test_readme.py`` runs each README code block.

A README block is pasted into a program that already has what the reader brings: their own
function, agents and client, and the lines before the block. This module supplies exactly
that, answered locally (no network, no key), under the names the README uses:

* ``lg`` (``import llmguard as lg``) and ``asyncio``, as imported by the README's first block;
* ``send_message(prompt)`` / ``send``: the reader's async function (a ``FakeLLM``);
* ``agent``, ``primary``, ``secondary``, ``backup``: the reader's agents, each with
  ``send_message``, ``send_message_async`` and a streaming ``stream_message``;
* ``client``: an ``openai.AsyncOpenAI`` talking to a loopback OpenAI-compatible server
  (``llmguard.testing.LoopbackServer``); ``OPENAI_BASE_URL``/``OPENAI_API_BASE`` point there
  too, so ``AsyncOpenAI()`` and litellm's ``acompletion`` built inside a block answer locally;
* ``msgs`` (chat messages) and ``prompts`` (a few prompts).

Run as ``python readme_world.py BLOCK.py`` in a scratch directory: a block with top-level
``await`` runs inside an event loop (as in ``python -m asyncio`` or a notebook), any other as a
script. A fixed port in a block (``serve_metrics(port=9464)``) is swapped for a free one, so
parallel runs never collide. Exit status 0 means the block ran as pasted.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import socket
import sys
import types

import llmguard as lg
from llmguard.testing import FakeLLM, LoopbackServer, SimulatedProvider


class Agent:
    """The reader's agent: replies "<name>: <prompt>", streams it word by word."""

    def __init__(self, name: str) -> None:
        self.llm = FakeLLM(reply_prefix=f"{name}: ", latency=0.01)

    async def send_message(self, prompt: str) -> str:
        return await self.llm.send_message(prompt)

    async def send_message_async(self, prompt: str) -> str:
        return await self.llm.send_message(prompt)

    async def stream_message(self, prompt: str):
        async for word in self.llm.stream_message(prompt):
            yield word


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def world() -> dict:
    """The names a block may use without defining them."""
    me = Agent("me")
    return {
        "__name__": "__main__", "lg": lg, "asyncio": asyncio,
        "send_message": me.send_message, "send": me.send_message,
        "agent": Agent("agent"), "primary": Agent("primary"),
        "secondary": Agent("secondary"), "backup": Agent("backup"),
        "msgs": [{"role": "user", "content": "What is a token bucket?"}],
        "prompts": [f"question {i}" for i in range(8)],
    }


async def _in_loop(code: types.CodeType, names: dict) -> None:
    async with LoopbackServer(SimulatedProvider(latency=0.01)) as server:
        os.environ["OPENAI_BASE_URL"] = os.environ["OPENAI_API_BASE"] = server.base_url
        os.environ["OPENAI_API_KEY"] = "sk-local-test"
        from openai import AsyncOpenAI

        names["client"] = AsyncOpenAI(base_url=server.base_url, api_key="sk-local-test",
                                      max_retries=0)
        result = eval(code, names)  # a coroutine: the block's top-level awaits
        await result


def main(path: str) -> None:
    source = open(path).read()
    source = re.sub(r"\bport=\d{4,5}\b", lambda _: f"port={_free_port()}", source)
    code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    names = world()
    if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits at top level
        asyncio.run(_in_loop(code, names))
    else:
        exec(code, names)


if __name__ == "__main__":
    main(sys.argv[1])
