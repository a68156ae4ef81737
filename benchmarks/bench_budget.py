"""A burst against a spend cap: llmguard's Budget and gateway versus LiteLLM's budgets, side by side.

N chat calls start at once (1,000 by default); their cost at list price is 3x the cap. Every
answer comes from litellm's ``mock_response`` after ``mock_delay`` seconds (no network), with
litellm's fixed mock usage (10 prompt and 20 completion tokens), so each answered call costs the
same: $0.0000135 at gpt-4o-mini's price in litellm's cost map. The bill is that price times the
usage each answer reports, summed over the answered calls: what the provider would charge.

- **llmguard Budget**: ``Budget(cap)`` (litellm's prices) in a pipeline around
  ``litellm.acompletion`` (``llmguard.integrations.litellm``): each call reserves its maximum
  cost before it is sent.
- **llmguard gateway, tenant max_budget**: ``llmguard serve`` with a tenant whose
  ``max_budget`` is the cap and a litellm model priced at gpt-4o-mini's price; the burst is N
  concurrent HTTP requests with the tenant's key (``mock_response`` in the body passes through).
- **hand-written check-then-record**: what a budget without reservations does, in 10 lines of
  asyncio: refuse when ``spent >= cap``, add each answer's cost after it.
- **LiteLLM Router provider budget**: ``Router(provider_budget_config={"openai":
  {"budget_limit": cap, "time_period": "1d"}})``, LiteLLM's in-process budget.
- **LiteLLM proxy key max_budget**: LiteLLM's proxy with a virtual key made by ``/key/generate``
  with ``max_budget`` = the cap, N concurrent HTTP requests with that key. Virtual keys need the
  proxy's Postgres database (``--database-url``, created if missing) and ``litellm[proxy]``
  (``--litellm-proxy``: its ``litellm`` executable, in a venv of its own); when the proxy cannot
  start, its row says why (from the proxy's own log).

Every in-process burst runs in a fresh process (LiteLLM keeps provider spend in process-wide
state); each HTTP burst runs in a fresh client process against a server (a new tenant or key per
repeat).

    python benchmarks/bench_budget.py [--calls 1000] [--repeats 3] [--delay 0.2]
        [--litellm-proxy PATH/litellm] [--database-url postgresql://...] [--no-litellm-proxy]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the cost map

import argparse
import asyncio
import functools
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_gateway import default_proxy, free_port, wait_up
from bench_gateway import stop as stop_group

MODEL = "gpt-4o-mini"
MOCK = "word " * 50
MAX_TOKENS = 60
MASTER_KEY = "sk-bench-master-key"
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/litellm_bench"
ROOT = Path(__file__).resolve().parent.parent

LIBRARY = "llmguard Budget"
GATEWAY = "llmguard gateway, tenant max_budget"
HANDWRITTEN = "hand-written check-then-record"
ROUTER = "LiteLLM Router provider budget"
PROXY = "LiteLLM proxy key max_budget"
IN_PROCESS = (LIBRARY, HANDWRITTEN, ROUTER)


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i % 10} about the budget " * 6}]


@functools.cache
def prices() -> tuple[float, float]:
    """USD per token, input and output, of MODEL in litellm's cost map."""
    import litellm

    info = litellm.get_model_info(MODEL)
    return float(info["input_cost_per_token"]), float(info["output_cost_per_token"])


def cost(usage: Any) -> float:
    """What the provider bills an answer reporting ``usage`` (an object or a dict)."""
    def get(name: str) -> int:
        return int(usage[name] if isinstance(usage, dict) else getattr(usage, name))

    per_input, per_output = prices()
    return get("prompt_tokens") * per_input + get("completion_tokens") * per_output


def one_call_cost() -> float:
    import litellm

    response = litellm.completion(model=MODEL, messages=messages(0), mock_response=MOCK,
                                  max_tokens=MAX_TOKENS)
    return cost(response.usage)


def contender(name: str, cap: float, delay: float) -> Callable[[int], Awaitable[Any]]:
    """One in-process contender: call(i) -> the answer (raises when refused)."""
    import litellm

    import llmguard as lg
    from llmguard.integrations import litellm as lg_litellm

    body = {"model": MODEL, "max_tokens": MAX_TOKENS, "mock_response": MOCK,
            "mock_delay": delay}
    if name == LIBRARY:
        chat = lg_litellm.completion(lg.Pipeline(name="budget").budget(cap))

        async def guarded(i: int) -> Any:
            return await chat(messages=messages(i), **body)

        return guarded
    if name == HANDWRITTEN:
        spent = 0.0

        async def checked(i: int) -> Any:
            nonlocal spent
            if spent >= cap:  # the check ...
                raise RuntimeError(f"budget exceeded: spent {spent} of {cap}")
            response = await litellm.acompletion(messages=messages(i), **body)
            spent += cost(response.usage)  # ... and the record, apart
            return response

        return checked
    router = litellm.Router(
        model_list=[{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_key": "sk-offline", "mock_response": MOCK}}],
        provider_budget_config={"openai": {"budget_limit": cap, "time_period": "1d"}},
    )

    async def routed(i: int) -> Any:
        return await router.acompletion(model=MODEL, messages=messages(i),
                                        max_tokens=MAX_TOKENS, mock_delay=delay)

    return routed


async def burst(fn: Callable[[int], Awaitable[Any]], calls: int) -> tuple[int, int, float]:
    """(answered, refused, bill in USD) of ``calls`` calls started at once."""
    results = await asyncio.gather(*(fn(i) for i in range(calls)), return_exceptions=True)
    answered = [r for r in results if not isinstance(r, BaseException)]
    return len(answered), len(results) - len(answered), sum(cost(r.usage) for r in answered)


async def http_burst(url: str, key: str, calls: int, delay: float) -> tuple[int, int, float]:
    """(answered, refused, bill in USD) of ``calls`` concurrent chat requests to ``url``."""
    import aiohttp

    statuses: dict[int, int] = {}

    async def one(session: aiohttp.ClientSession, i: int) -> float | None:
        body = {"model": MODEL, "messages": messages(i), "max_tokens": MAX_TOKENS,
                "mock_response": MOCK, "mock_delay": delay}
        async with session.post(url, json=body,
                                headers={"authorization": f"Bearer {key}"}) as response:
            answer = await response.json(content_type=None)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            return cost(answer["usage"]) if response.status == 200 else None

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        bills = await asyncio.gather(*(one(session, i) for i in range(calls)))
    print(f"statuses: {statuses}", file=sys.stderr)
    answered = [b for b in bills if b is not None]
    return len(answered), calls - len(answered), sum(answered)


def quiet() -> None:
    import litellm

    litellm.suppress_debug_info = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "llmguard.budget"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def one_run(name: str, calls: int, delay: float, *target: str) -> tuple[int, int, float]:
    """One burst through ``name`` from a fresh process: (answered, refused, bill / cap);
    ``target``: the URL and key of an HTTP contender."""
    extra = ["--url", target[0], "--key", target[1]] if target else []
    done = subprocess.run([sys.executable, __file__, "--one", name, "--calls", str(calls),
                           "--delay", str(delay), *extra], capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
    answered, refused, ratio = json.loads(done.stdout.strip().splitlines()[-1])
    return answered, refused, ratio


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:  # a server that exited on its own has nothing to stop
        stop_group(proc)


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, start_new_session=True)


def gateway(tmp: Path, cap: float, repeats: int) -> tuple[subprocess.Popen, str, list[str]]:
    """``llmguard serve`` with one tenant per repeat, each with ``max_budget = cap``."""
    per_input, per_output = prices()
    keys = [f"bench-tenant-key-{n}" for n in range(repeats)]
    tenants = "".join(f'\n[tenants.t{n}]\napi_key_env = "BENCH_TENANT_{n}"\n'
                      f"max_budget = {cap!r}\n" for n in range(repeats))
    config = tmp / "gateway.toml"
    config.write_text(f'[models.{MODEL}]\nprovider = "litellm"\nmodel = "openai/{MODEL}"\n'
                      f'api_key_env = "BENCH_UPSTREAM_KEY"\nprice_input = {per_input * 1e6!r}\n'
                      f"price_output = {per_output * 1e6!r}\n{tenants}")
    port = free_port()
    env = {"PYTHONPATH": str(ROOT), "BENCH_UPSTREAM_KEY": "sk-offline",
           **{f"BENCH_TENANT_{n}": key for n, key in enumerate(keys)}}
    proc = start([sys.executable, "-m", "llmguard", "serve", "--config", str(config), "--port",
                  str(port)], tmp / "gateway.log", env, ROOT)
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", proc)
    except RuntimeError as exc:
        stop(proc)
        raise SystemExit(f"llmguard serve did not start ({exc}): "
                         f"{(tmp / 'gateway.log').read_text()[-2000:]}") from None
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions", keys


def why_not(log: Path) -> str:
    """The proxy's own last error line: why it did not come up."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
             if line.strip()]
    for line in reversed(lines):
        if "rror" in line:
            return line[-300:]
    return lines[-1][-300:] if lines else "no output"


def create_database(url: str) -> None:
    """Create the proxy's database when it does not exist (Postgres with trust auth)."""
    base, _, name = url.rpartition("/")
    psql = shutil.which("psql")
    if psql is None:
        return  # the proxy's own error will say what is missing
    found = subprocess.run([psql, f"{base}/postgres", "-tAc",
                            f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                           capture_output=True, text=True, check=False)
    if found.returncode == 0 and not found.stdout.strip():
        subprocess.run([psql, f"{base}/postgres", "-c", f'CREATE DATABASE "{name}"'],
                       capture_output=True, text=True, check=False)


def litellm_proxy(exe: str, database_url: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    """LiteLLM's proxy with a master key and its database: (process, base URL); raises
    RuntimeError saying why when it does not come up."""
    if not Path(exe).exists() and shutil.which(exe) is None:
        raise RuntimeError(f"{exe} not found (install litellm[proxy] in a venv of its own and "
                           "pass its litellm executable as --litellm-proxy)")
    create_database(database_url)
    (tmp / "litellm.yaml").write_text(
        f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n"
        f"      model: openai/{MODEL}\n      api_key: sk-offline\n"
        f"general_settings:\n  master_key: {MASTER_KEY}\n  database_url: {database_url}\n")
    port = free_port()
    log = tmp / "litellm.log"
    proc = start([exe, "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port)],
                 log, {"LITELLM_LOG": "ERROR"}, tmp)
    try:
        wait_up(f"http://127.0.0.1:{port}/health/liveliness", proc, limit=300)
    except RuntimeError as exc:
        stop(proc)
        raise RuntimeError(f"{exc}: {why_not(log)}") from None
    return proc, f"http://127.0.0.1:{port}"


def proxy_key(base: str, cap: float) -> str:
    """A new virtual key with ``max_budget = cap``."""
    import urllib.request

    request = urllib.request.Request(
        f"{base}/key/generate", method="POST",
        data=json.dumps({"max_budget": cap, "models": [MODEL]}).encode(),
        headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["key"]


def table(rows: dict[str, list[tuple[int, int, float]]], repeats: int) -> None:
    print("| contender | answered | refused | bill / cap | worst bill / cap | within the cap |")
    print("|---|--:|--:|--:|--:|---|")
    for name, runs in rows.items():
        if not runs:
            print(f"| {name} | not run | | | | |")
            continue
        ratios = [ratio for _, _, ratio in runs]
        within = sum(ratio <= 1.0 for ratio in ratios)
        print(f"| {name} | {statistics.median(r[0] for r in runs):,.0f} | "
              f"{statistics.median(r[1] for r in runs):,.0f} | {statistics.median(ratios):.3f} | "
              f"{max(ratios):.3f} | {within} of {len(runs)} |")


def main(args: argparse.Namespace) -> None:
    quiet()
    calls, repeats, delay = args.calls, args.repeats, args.delay
    cap = calls / 3 * one_call_cost()
    rows: dict[str, list[tuple[int, int, float]]] = {
        name: [] for name in (LIBRARY, GATEWAY, HANDWRITTEN, ROUTER, PROXY)}
    proxy_note = "not run (--no-litellm-proxy)"
    with tempfile.TemporaryDirectory() as tmp:
        server, url, keys = gateway(Path(tmp), cap, repeats)
        try:
            for n in range(repeats):  # interleaved, so machine noise hits all alike
                for name in IN_PROCESS:
                    rows[name].append(one_run(name, calls, delay))
                rows[GATEWAY].append(one_run(GATEWAY, calls, delay, url, keys[n]))
        finally:
            stop(server)
        if not args.no_litellm_proxy:
            try:
                proxy, base = litellm_proxy(args.litellm_proxy, args.database_url, Path(tmp))
            except RuntimeError as exc:
                proxy_note = f"could not run: {exc}"
            else:
                proxy_note = f"{args.litellm_proxy}, database {args.database_url}"
                try:
                    for _ in range(repeats):
                        rows[PROXY].append(one_run(PROXY, calls, delay,
                                                   f"{base}/v1/chat/completions",
                                                   proxy_key(base, cap)))
                finally:
                    stop(proxy)
    print(f"{calls} calls at once, list cost 3.0x the cap (${cap:.6f}); answers after "
          f"{delay:g} s; medians of {repeats} repeats, each burst from a fresh process\n")
    table(rows, repeats)
    print(f"\nLiteLLM proxy key max_budget: {proxy_note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--litellm-proxy", default=default_proxy(),
                        help="the litellm executable of a venv with litellm[proxy] "
                             "(default: $LITELLM_PROXY, else litellm beside this Python)")
    parser.add_argument("--database-url", default=DATABASE_URL,
                        help="Postgres database of the proxy's virtual keys (created if missing)")
    parser.add_argument("--no-litellm-proxy", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single burst, in this process
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is None:
        main(args)
    else:
        quiet()
        one_cap = args.calls / 3 * one_call_cost()

        async def run_one() -> tuple[int, int, float]:  # the Router needs a running loop
            if args.url:
                return await http_burst(args.url, args.key, args.calls, args.delay)
            return await burst(contender(args.one, one_cap, args.delay), args.calls)

        answered, refused, bill = asyncio.run(run_one())
        print(json.dumps([answered, refused, bill / one_cap]))
