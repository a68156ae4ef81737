"""Budget: reserve each attempt's maximum cost, settle to the answer's cost, never pass the cap.

Runs under looptime: the provider's latency is virtual, so a burst of hundreds of calls that wait
for settlements takes milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import math

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._admission.budget.prices import Price
from llmguard._admission.budget.windows import window
from llmguard._core.tokens import prompt_bound
from llmguard.testing import FakeLLM, FixedWindowServer, RateLimited, make_error

PRICES = {"m": (1.0, 2.0)}  # USD per million input / output tokens


def ask(i: int = 0, max_tokens: int = 100) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}],
            "max_tokens": max_tokens}


#: Rounding of a float sum of bills; the ledger itself counts exact integer nano-dollars.
FLOAT_SUM = 1e-12
#: USD a call of ``ask()`` reserves: the prompt's bound and 100 output tokens at PRICES.
RESERVE = Price(1.0, 2.0).reserve(prompt_bound(**ask()), 100) / 1e9


def bill(results: list, prices: dict = PRICES) -> float:
    """What the provider charges: the usage it reported, at list price."""
    total = 0.0
    for result in results:
        if isinstance(result, dict):
            usage, (inp, out) = result["usage"], prices[result["model"]]
            total += (usage["prompt_tokens"] * inp + usage["completion_tokens"] * out) / 1e6
    return total


async def test_a_burst_at_3x_the_cap_spends_between_95_and_100_percent() -> None:
    """300 concurrent calls whose list cost is about 3x the cap: the provider's bill never
    passes the cap and reaches >= 95% of it; every call either answers or ends with
    BudgetExceeded (none lost or hung); nothing stays reserved."""
    llm = FakeLLM(latency=1.0)
    one = bill([await llm.acompletion(**ask())])
    budget = lg.Budget(100 * one, prices=PRICES)
    chat = lg.Pipeline(budget).wrap(llm.acompletion)
    # max_tokens near the answers' length (4 tokens), as a cost-aware caller sets it: the last
    # reservation that cannot fit leaves at most its own size unspent.
    results = await asyncio.gather(*(chat(**ask(i % 10, max_tokens=8)) for i in range(300)),
                                   return_exceptions=True)
    answered = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, lg.BudgetExceeded)]
    assert len(answered) + len(refused) == 300
    assert 0.95 * budget.usd <= bill(answered) <= budget.usd + FLOAT_SUM  # the sum's rounding
    stats = budget.statistics()
    assert stats.reserved_usd == 0 and stats.in_flight == 0 and stats.waiting == 0
    assert stats.spent_usd <= budget.usd and stats.spent_usd == pytest.approx(bill(answered))
    assert "spent" in str(refused[0]) and "raise the cap" in str(refused[0])


async def test_a_call_that_does_not_fit_waits_for_settlements_then_goes() -> None:
    """The cap holds two reservations; the third call waits (no polling: it goes the moment
    the first settles, at 1 s) and answers, since the actual cost is far below the reserve."""
    llm = FakeLLM(latency=1.0)
    budget = lg.Budget(1.0, prices={"m": (0.0, 4000.0)})  # 100 output tokens reserve $0.4
    chat = lg.Pipeline(budget).wrap(llm.acompletion)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = [asyncio.create_task(chat(**ask(i))) for i in range(3)]
    await asyncio.sleep(0.5)
    assert budget.statistics().waiting == 1 and budget.statistics().in_flight == 2
    await asyncio.gather(*tasks)
    assert loop.time() - start == pytest.approx(2.0)
    assert budget.statistics().rejected == 0


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_one_goes() -> None:
    """Cancel the head of the line and a call behind it: the line is empty afterwards, nothing
    stays reserved, and the last waiter is admitted at the first settlement."""
    llm = FakeLLM(latency=1.0)
    budget = lg.Budget(1.0, prices={"m": (0.0, 4000.0)})  # room for two reservations
    chat = lg.Pipeline(budget).wrap(llm.acompletion)
    running = [asyncio.create_task(chat(**ask(i))) for i in range(2)]
    waiting = [asyncio.create_task(chat(**ask(i))) for i in range(3)]
    await asyncio.sleep(0.5)
    assert budget.statistics().waiting == 3
    waiting[0].cancel()
    waiting[1].cancel()
    await asyncio.sleep(0.1)
    assert budget.statistics().waiting == 1
    await asyncio.gather(*running, waiting[2])
    assert budget.statistics().waiting == 0 and budget.statistics().reserved_usd == 0
    assert not budget._lines.lines and waiting[0].cancelled() and llm.call_count == 3


async def test_a_call_is_refused_at_once_when_even_settling_at_zero_cannot_make_room() -> None:
    """spent + reservation > cap: BudgetExceeded without waiting for calls in flight; a call
    bigger than the whole cap is refused before anything is asked."""
    llm = FakeLLM(latency=5.0)
    one = Price(1.0, 2.0).reserve(0, 100) / 1e9
    budget = lg.Budget(one * 1.5, prices=PRICES)
    chat = lg.Pipeline(budget).wrap(llm.acompletion)
    with pytest.raises(lg.BudgetExceeded, match="raise the cap"):
        await chat(**ask(max_tokens=10_000))
    assert llm.call_count == 0
    first = asyncio.create_task(chat(**ask(max_tokens=50)))
    await asyncio.sleep(5.5)  # settled: spent is now its real (small) cost
    await first
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(lg.BudgetExceeded) as caught:
        await chat(**ask(max_tokens=100 * 1000))
    assert loop.time() == start and caught.value.cap == budget.usd


async def test_attempts_that_were_not_billed_cost_nothing() -> None:
    """Refused below (never sent) and answered with an error status (a 429): refunded. Sent and
    never answered (a timeout): charged the whole reservation, the provider may have billed it."""
    budget = lg.Budget(1.0, prices=PRICES)
    limited = FakeLLM([RateLimited("slow down", status_code=429, headers={})])
    with pytest.raises(RateLimited):
        await lg.Pipeline(budget).wrap(limited.acompletion)(**ask())
    async def refuser(call: lg.Call, call_next: lg.Handler) -> object:
        raise lg.QueueFull("no room below")

    with pytest.raises(lg.QueueFull):
        await lg.Pipeline(budget, refuser).wrap(FakeLLM().acompletion)(**ask())
    assert budget.statistics().refunds == 2 and budget.statistics().spent_usd == 0
    spent = budget.statistics().spent_usd
    hang = lg.Pipeline(lg.Timeout(1), budget).wrap(FakeLLM(latency=60).acompletion)
    with pytest.raises(lg.TimeoutExceeded):
        await hang(**ask())
    charged = budget.statistics().spent_usd - spent
    assert charged == pytest.approx(RESERVE)
    assert budget.statistics().reserved_usd == 0


async def test_an_unpriced_model_is_refused_with_how_to_price_it() -> None:
    """No price: refused at the first call (never counted free); a '*' entry prices the rest."""
    llm = FakeLLM()
    chat = lg.Pipeline(lg.Budget(1.0, prices=PRICES)).wrap(llm.acompletion)
    with pytest.raises(LookupError, match=r"prices=\{'other': \(usd_per_million_input"):
        await chat(**{**ask(), "model": "other"})
    assert llm.call_count == 0
    star = lg.Pipeline(lg.Budget(1.0, prices={"*": (1.0, 1.0)})).wrap(llm.acompletion)
    assert (await star(**{**ask(), "model": "other"}))["usage"]
    assert await lg.Pipeline(lg.Budget(1.0, prices={"*": (1.0, 1.0)})).wrap(
        llm.send_message)("hi") == "echo: hi"


async def test_litellm_cost_map_prices_known_models_and_the_maximum_output(caplog) -> None:
    """Without prices, litellm's map prices gpt-4o-mini; a call without max_tokens reserves the
    model's maximum output (16,384 tokens) and says so once."""
    budget = lg.Budget(0.02, prices=None)
    chat = lg.Pipeline(budget).wrap(FakeLLM(latency=1).acompletion)
    call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level(logging.WARNING, "llmguard.budget"):
        task = asyncio.create_task(chat(**call))
        await asyncio.sleep(0.5)
        assert budget.statistics().reserved_usd >= 16_384 * 0.6 / 1e6
        await task
        await chat(**call)
    assert sum("set no max_tokens" in r.message for r in caplog.records) == 1
    assert 0 < budget.statistics().spent_usd < 1e-5
    # Its batch prices too (the map's *_batches fields; else half the online price).
    assert budget.price("gpt-4o-mini", batch=True) == pytest.approx((0.075, 0.3))
    assert budget.price("gpt-4o-mini") == pytest.approx((0.15, 0.6))


async def test_keys_have_their_own_budgets_and_the_soft_limit_fires_once() -> None:
    """key= gives each tenant its own cap; soft=0.15 publishes budget_soft_limit once per key."""
    llm = FakeLLM()
    one = bill([await llm.acompletion(**ask())])
    budget = lg.Budget(3 * one + 0.99 * RESERVE, prices=PRICES, soft=0.15,
                       key=lambda call: call.kwargs["user"])
    chat = lg.Pipeline(budget).wrap(llm.acompletion)
    events: list[lg.Event] = []
    with lg.subscribe(events.append, "budget_soft_limit"):
        for user in ("a", "b"):
            for _ in range(3):
                await chat(**ask(), user=user)
            with pytest.raises(lg.BudgetExceeded, match=f"for key '{user}'"):
                await chat(**ask(), user=user)
    assert len(events) == 2 and all(e.detail.spent_usd >= 0.15 * budget.usd for e in events)
    assert budget.statistics("a").spent_usd == pytest.approx(3 * one)
    assert budget.statistics("c").spent_usd == 0


async def test_streams_settle_at_their_end_from_the_final_usage_chunk() -> None:
    """A stream holds its reservation until it ends; with usage in its last chunk it settles to
    that; closed early (no usage) it is charged the reservation."""
    llm = FakeLLM()
    budget = lg.Budget(1.0, prices=PRICES)
    chat = lg.Pipeline(budget).wrap(llm.acompletion)
    stream = await chat(**ask(), stream=True, stream_options={"include_usage": True})
    assert budget.statistics().in_flight == 1
    chunks = [chunk async for chunk in stream]
    assert budget.statistics().in_flight == 0 and budget.statistics().reserved_usd == 0
    usage = chunks[-1]["usage"]
    assert budget.statistics().spent_usd == pytest.approx(
        (usage["prompt_tokens"] + 2 * usage["completion_tokens"]) / 1e6)
    before = budget.statistics().spent_usd
    stream = await chat(**ask(), stream=True)
    await stream.aclose()
    assert budget.statistics().spent_usd - before > usage["prompt_tokens"] / 1e6 * 10


async def test_a_cost_written_inside_wins_and_the_record_carries_the_cost() -> None:
    """An integration below that prices the attempt (litellm's record.cost) is what settles;
    otherwise Budget writes the record's cost itself."""
    async def priced(call: lg.Call, call_next: lg.Handler) -> object:
        result = await call_next(call)
        call.record.cost = (call.record.cost or 0.0) + 0.001
        return result

    budget = lg.Budget(1.0, prices=PRICES)
    with lg.recording() as calls:
        await lg.Pipeline(budget, priced).wrap(FakeLLM().acompletion)(**ask())
        await lg.Pipeline(budget).wrap(FakeLLM().acompletion)(**ask())
    assert budget.statistics().spent_usd == pytest.approx(0.001 + calls[1].cost)
    assert calls[0].cost == 0.001 and 0 < calls[1].cost < 0.001


def test_cached_input_is_billed_at_the_cached_price() -> None:
    """OpenAI counts cache reads inside prompt_tokens; Anthropic beside input_tokens."""
    price = Price(2.0, 8.0, cached_input=0.5)
    openai = {"prompt_tokens": 1000, "completion_tokens": 10,
              "prompt_tokens_details": {"cached_tokens": 800}}
    assert price.cost(openai, 1000, 10) == math.ceil((200 * 2 + 800 * 0.5 + 10 * 8) * 1000)
    anthropic = {"input_tokens": 200, "output_tokens": 10, "cache_read_input_tokens": 800,
                 "cache_creation_input_tokens": 100}
    assert price.cost(anthropic, 200, 10) == math.ceil(
        (200 * 2 + 800 * 0.5 + 100 * 2.5 + 10 * 8) * 1000)


def test_calendar_windows_in_utc() -> None:
    """Labels and ends of minute, hour, day and month windows, across a year's end."""
    at = 1798761599.5  # 2026-12-31T23:59:59.5Z
    assert window("minute", at) == ("2026-12-31T23:59Z", 1798761600.0)
    assert window("hour", at) == ("2026-12-31T23Z", 1798761600.0)
    assert window("day", at) == ("2026-12-31", 1798761600.0)
    assert window("month", at) == ("2026-12", 1798761600.0)
    assert window("month", 1798761600.0)[0] == "2027-01"
    assert window(None, at) == ("total", None)


async def test_a_new_window_starts_from_zero(monkeypatch) -> None:
    """per="day": yesterday's spend does not count today."""
    from llmguard._admission.budget import layer

    now = [1798761599.0]
    monkeypatch.setattr(layer.time, "time", lambda: now[0])
    llm = FakeLLM()
    one = bill([await llm.acompletion(**ask())])
    budget = lg.Budget(one + 0.99 * RESERVE, prices=PRICES, per="day")
    chat = lg.Pipeline(budget).wrap(llm.acompletion)
    await chat(**ask())
    with pytest.raises(lg.BudgetExceeded, match=r"day 2026-12-31 UTC.*2027-01-01T00:00Z"):
        await chat(**ask())
    now[0] += 2
    await chat(**ask())
    assert budget.statistics().window == "2027-01-01"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"usd": -1}, ValueError, "usd must be a positive number of US dollars"),
    ({"usd": float("nan")}, ValueError, "usd must be .* finite"),
    ({"usd": "5"}, TypeError, "usd"),
    ({"usd": 1, "per": "week"}, ValueError, "per must be one of 'minute'"),
    ({"usd": 1, "soft": 1.5}, ValueError, "soft"),
    ({"usd": 1, "prices": {"m": (1.0,)}}, TypeError, r"prices\['m'\]"),
    ({"usd": 1, "prices": {"m": (1.0, -2.0)}}, ValueError, "output price"),
    ({"usd": 1, "prices": {"m": (1.0, float("nan"))}}, ValueError, "output price"),
    ({"usd": 1, "prices": {}}, TypeError, "prices must be a non-empty dict"),
    ({"usd": 1, "key": "tenant"}, TypeError, "key must be a callable"),
    ({"usd": 1, "backend": object()}, TypeError, "backend must be"),
])
def test_bad_arguments_fail_at_construction_naming_them(kwargs, error, match) -> None:
    """Negative, NaN, unknown windows and malformed prices are refused early and named."""
    usd = kwargs.pop("usd")
    with pytest.raises(error, match=match):
        lg.Budget(usd, **kwargs)


async def test_inside_the_readme_stack_against_a_fixed_window_server() -> None:
    """The README's stack with defaults and a Budget in its place, against a fixed-window
    server with demand above its quota: the bill stays within the cap and reaches 95% of it,
    nothing is cancelled after the server charged it, and Metrics' cost equals the spend."""
    server = FixedWindowServer(rpm=60, tpm=40_000, latency=2.0)
    one = 12 / 1e6 + 2 * 64 / 1e6  # ~12 prompt tokens, 64 output tokens at PRICES
    budget = lg.Budget(60 * one, prices=PRICES)
    metrics = lg.Metrics(name="budget-stack")
    chat = (lg.Pipeline(metrics, name="budget-stack").cache(ttl=300).retry(attempts=4)
            .circuit_breaker().timeout(30).then(budget).rate_limit(rpm=60, tpm=40_000)
            .concurrency_limit(32).wrap(server.acompletion))
    results = await asyncio.gather(*(chat(**ask(i, max_tokens=200)) for i in range(180)),
                                   return_exceptions=True)
    answered = [r for r in results if isinstance(r, dict)]
    others = {type(r).__name__ for r in results if not isinstance(r, dict)}
    assert others <= {"BudgetExceeded"}
    assert 0.95 * budget.usd <= bill(answered) <= budget.usd + FLOAT_SUM  # the sum's rounding
    assert server.statistics().cancelled_after_arrival == 0
    assert sum(metrics.snapshot().cost.values()) == pytest.approx(budget.statistics().spent_usd)


async def test_each_attempt_reserves_and_a_failed_attempt_with_a_status_is_refunded() -> None:
    """Inside Retry: the 503 attempt is refunded (not billed), the answer is charged; two
    admissions, one refund, spend = the answer's cost."""
    llm = FakeLLM([make_error(lg.FailureKind.OVERLOADED)])
    budget = lg.Budget(1.0, prices=PRICES)
    chat = lg.Pipeline(lg.Retry(attempts=3, backoff=0.1), budget).wrap(llm.acompletion)
    result = await chat(**ask())
    stats = budget.statistics()
    assert (stats.admitted, stats.refunds, llm.call_count) == (2, 1, 2)
    assert stats.spent_usd == pytest.approx(bill([result]))


class Provider:
    """Answers after ``latency`` with the usage it is told, and records when each call was
    running: (start, end, input tokens, output tokens)."""

    def __init__(self) -> None:
        self.log: list[tuple[float, float, int, int]] = []

    async def __call__(self, prompt: str, *, model: str, max_tokens: int, used: int,
                       latency: float, fail: bool) -> dict:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(latency)
        if fail:
            raise RateLimited("busy", status_code=429, headers={})
        self.log.append((start, loop.time(), 10, used))
        return {"usage": {"prompt_tokens": 10, "completion_tokens": used}}


@settings(max_examples=60, deadline=None)
@given(
    cap_calls=st.floats(0.5, 30),
    calls=st.lists(st.tuples(st.floats(0, 20), st.integers(1, 400), st.floats(0, 1),
                             st.floats(0.1, 10), st.booleans(), st.booleans()),
                   min_size=1, max_size=60),
)
def test_spend_never_passes_the_cap_whatever_the_arrivals(cap_calls, calls) -> None:
    """Property: for any arrivals, max_tokens, usage (never above max_tokens), latencies,
    provider errors and cancellations, the settled spend never passes the cap, every call ends
    (answer, BudgetExceeded, provider error or cancelled), and nothing stays reserved or
    waiting; a call refused could not have fit even if the calls in flight cost nothing."""
    async def scenario() -> None:
        provider = Provider()
        cap = cap_calls * Price(1.0, 2.0).reserve(40, 100) / 1e9
        budget = lg.Budget(cap, prices=PRICES)
        guarded = lg.guard(budget)(provider)
        outcomes: list[str] = []

        async def one(start, max_tokens, used, latency, fail, cancel) -> None:
            await asyncio.sleep(start)
            if cancel:
                asyncio.get_running_loop().call_later(latency / 2, asyncio.current_task().cancel)
            try:
                await guarded("hello", model="m", max_tokens=max_tokens,
                              used=int(used * max_tokens), latency=latency, fail=fail)
                outcomes.append("answered")
            except lg.BudgetExceeded as exc:
                assert exc.spent + exc.needed > exc.cap
                outcomes.append("refused")
            except RateLimited:
                outcomes.append("error")
            except asyncio.CancelledError:
                outcomes.append("cancelled")

        await asyncio.gather(*(one(*c) for c in calls))
        assert len(outcomes) == len(calls)
        stats = budget.statistics()
        assert stats.spent_usd <= cap + 1e-12
        assert stats.reserved_usd == 0 and stats.in_flight == 0 and stats.waiting == 0
        assert not budget._lines.lines
        billed = sum(inp * 1.0 + out * 2.0 for _, _, inp, out in provider.log) / 1e6
        assert billed <= stats.spent_usd + 1e-12

    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_reserve_holds_money_for_work_the_layer_does_not_wrap() -> None:
    """Budget.reserve (a provider batch's way in): a reservation that does not fit now waits
    for one in flight to settle, one that can never fit raises BudgetExceeded, wait=False
    answers None instead of waiting; settle() charges the cost given (None: as reserved), once."""
    budget = lg.Budget(1.0, prices={"*": (1.0, 1.0)})
    first = await budget.reserve(0.7)
    assert await budget.reserve(0.5, wait=False) is None
    later = asyncio.create_task(budget.reserve(0.5))
    await asyncio.sleep(1)
    assert not later.done() and budget.statistics().waiting == 1
    first.settle(0.2)
    second = await later
    with pytest.raises(lg.BudgetExceeded, match="a reservation of"):
        await budget.reserve(0.9)
    second.settle()
    with pytest.raises(RuntimeError, match="settled already"):
        second.settle(0.1)
    stats = budget.statistics()
    assert stats.spent_usd == pytest.approx(0.7) and stats.reserved_usd == 0
    assert stats.in_flight == 0 and stats.admitted == 2
