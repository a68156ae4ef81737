"""The seed's resilience patterns, each one line of llmguard (offline, fake models).

* retry with exponential backoff   -> Retry(attempts=4)
* primary/secondary fallback       -> Fallback(secondary.send_message)
* graceful degradation             -> Fallback(default="...")
"""

import asyncio

import llmguard as lg
from llmguard import FailureKind
from llmguard.testing import FakeLLM, make_error


async def main() -> None:
    # Two 503s, then an answer: Retry waits with jittered exponential backoff.
    flaky = FakeLLM([make_error(FailureKind.OVERLOADED)] * 2)
    send = lg.guard(lg.Retry(attempts=4, backoff=0.01))(flaky.send_message)
    print("retry:", await send("hello"), f"after {flaky.call_count} attempts")

    # The primary keeps failing: the secondary answers.
    primary = FakeLLM([make_error(FailureKind.SERVER_ERROR)] * 10)
    secondary = FakeLLM(reply_prefix="secondary: ")
    send = lg.guard(lg.Fallback(secondary.send_message), lg.Retry(attempts=2, backoff=0.01))(
        primary.send_message)
    print("fallback:", await send("hello"))

    # Everything is down: answer something useful instead of an exception.
    down = FakeLLM([make_error(FailureKind.OVERLOADED)] * 10)
    send = lg.guard(lg.Fallback(default="The assistant is busy, please try again."))(
        down.send_message)
    print("degraded:", await send("hello"))

    # A prompt too long for the model goes straight to a long-context model.
    small = FakeLLM([make_error(FailureKind.CONTEXT_WINDOW)])
    chat = lg.guard(lg.Fallback(routes={FailureKind.CONTEXT_WINDOW: {"model": "long-128k"}}))(
        small.acompletion)
    reply = await chat(model="small-8k", messages=[{"role": "user", "content": "a long text"}])
    print("routed to:", reply["model"])


if __name__ == "__main__":
    asyncio.run(main())
