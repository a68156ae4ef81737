"""Cache keys across processes (#35 item 11): two real processes sharing a Redis store without
``namespace=`` never read each other's answers for callables whose identity only this process
knows (closures, ``functools.partial`` over objects without a stable form, bound methods):
such entries stay each process's own. Module-level functions still share. Real processes and
Redis: looptime off, generous timeouts that only guard against a hung child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD = 120

WORKER = r'''
import asyncio, functools, json, sys
import llmguard as lg
from llmguard.backends.redis import RedisBackend, RedisStore

url, prefix, persona = sys.argv[1:4]
sent = []

class Agent:  # no stable form: not JSON, not a dataclass or pydantic model
    def __init__(self, persona):
        self.persona = persona

    async def reply(self, prompt):
        sent.append("method")
        return f"{self.persona} says: {prompt}"

async def ask(agent, prompt):
    sent.append("partial")
    return f"{agent.persona} says: {prompt}"

def make_closure(persona):
    async def answer(prompt):
        sent.append("closure")
        return f"{persona} says: {prompt}"
    return answer

async def shared(prompt):  # module-level: the same key in every process
    sent.append("shared")
    return f"shared: {prompt}"

async def main():
    backend = RedisBackend(url, prefix=prefix, timeout=30.0)
    cache = lg.Cache(ttl=300, store=RedisStore(backend))
    agent = Agent(persona)
    targets = {"partial": functools.partial(ask, agent), "closure": make_closure(persona),
               "method": agent.reply, "shared": shared}
    answers = {name: await lg.guard(cache)(fn)("hello") for name, fn in targets.items()}
    await backend.aclose()
    print(json.dumps({"answers": answers, "sent": sent}))

asyncio.run(main())
'''


def _run(url: str, prefix: str, persona: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", WORKER, url, prefix, persona], env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_processes_never_read_each_others_process_local_entries(redis_url, redis_prefix):
    """The "pirate" worker fills the shared store first; the "lawyer" worker then asks the same
    things through its own closure, partial and bound method and gets its own answers (before:
    the process-local counter started at 1 in both, the keys collided and the lawyer got the
    pirate's answers). The module-level function's entry is shared: one provider call."""
    pirate = _run(redis_url, redis_prefix, "pirate")
    lawyer = _run(redis_url, redis_prefix, "lawyer")
    for name in ("partial", "closure", "method"):
        assert pirate["answers"][name] == "pirate says: hello"
        assert lawyer["answers"][name] == "lawyer says: hello", name
    assert pirate["answers"]["shared"] == lawyer["answers"]["shared"] == "shared: hello"
    assert sorted(pirate["sent"]) == ["closure", "method", "partial", "shared"]
    assert sorted(lawyer["sent"]) == ["closure", "method", "partial"]  # shared: a hit


def test_a_forked_child_names_its_objects_apart_from_its_parent() -> None:
    """Serials after a fork carry the child's own process name, so siblings forked from one
    parent (a preloading server's workers) never give their new closures one key."""
    from llmguard._cache.identity import serial

    class Thing:
        pass

    before = serial(Thing())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report a new object's serial, then leave at once
        os.write(write, serial(Thing()).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    mine = serial(Thing())
    assert child.split(".")[0] != mine.split(".")[0] == before.split(".")[0]
