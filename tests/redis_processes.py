"""Two RateLimit layers sharing one Redis key, each with its own RedisBackend: two processes as
far as sharing goes (tests/backends)."""

import contextvars

import llmguard as lg
from llmguard.backends.redis import RedisBackend


def two_processes(server, redis_url, prefix, rpm, max_wait=None):
    """Two RateLimit(rpm=...) layers with their own RedisBackend and the same prefix, each
    reading the headers of its own answers; returns (the layers, their guarded calls)."""
    caller: contextvars.ContextVar = contextvars.ContextVar("caller")
    server.on_headers.append(lambda headers: caller.get().observe_headers(headers))
    layers = [lg.RateLimit(rpm=rpm, max_wait=max_wait,
                           backend=RedisBackend(redis_url, prefix=prefix, timeout=30.0))
              for _ in range(2)]

    def guarded(layer):
        async def ask():
            caller.set(layer)
            return await server.acompletion(messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=5)
        return lg.Pipeline(layer).wrap(ask)

    return layers, [guarded(layer) for layer in layers]
