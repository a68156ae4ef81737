"""A custom layer: log each attempt's duration. Runs offline on the fake model."""

import asyncio
import logging

import llmguard as lg
from llmguard.testing import FakeLLM


class LogPrompts:
    """Log every call and how long it took."""

    async def __call__(self, call: lg.Call, call_next: lg.Handler):
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await call_next(call)
        finally:
            logging.info("%s attempt %d took %.3fs", call.name, call.attempt, loop.time() - start)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    llm = FakeLLM(latency=0.01)
    send_message = lg.Pipeline(name="chat").then(LogPrompts()).wrap(llm.send_message)
    print(await send_message("hello"))


if __name__ == "__main__":
    asyncio.run(main())
