"""A burst's answers heard out of the order the server served them (``ratelimit/
giveback_order.py``): with nothing of ours on the way, the readings judged in the order of
what they show. Pure: ``now`` is passed, as :class:`GiveBack` is driven by the layer."""

from __future__ import annotations

from llmguard._admission.ratelimit.giveback import GiveBack

LIMIT, WINDOW, SPREAD, MAX_TOKENS, USED = 3_000, 60.0, 0.5, 200, 64
#: The served order (k) of each answer as heard: a wave of 15 answered within 14 ms at :60,
#: each way 0-10 ms (the :58 run of ``test_io_answers_out_of_order``, seed 1).
HEARD = [1, 4, 5, 0, 11, 9, 8, 6, 12, 3, 2, 10, 13, 14, 7]


def wave(gives_back: bool) -> GiveBack:
    """15 calls admitted at :58 (nothing after), answered from :60.002 in the order
    ``HEARD``, the server's output ``remaining`` in answer k showing the k answers served
    before it given back (or not)."""
    back, settled = GiveBack(SPREAD, WINDOW), []
    back.quota = LIMIT
    entries = [object() for _ in HEARD]
    for entry in entries:
        back.admitted(58.0, MAX_TOKENS, entry)
    for i, k in enumerate(HEARD):
        now = 60.002 + 0.001 * i
        back.read(now, 236 + (MAX_TOKENS - USED) * k * gives_back, LIMIT, entry=entries[k])
        back.ended(now, USED, MAX_TOKENS, settled.append, entries[k])
    return back


def test_a_wave_heard_out_of_order_shows_the_give_back() -> None:
    """Heard as they came, a span ended on a reading older than four heard before it (1,188
    after 2,140), 952 unused output "ended in" a rise of 136: a vote "keeps it". Ordered by
    what they show, the span starts from the lowest (the first served) and counts the answers
    showing between its ends: two spans of the wave show the give-back."""
    back = wave(gives_back=True)
    assert back.verdict is True, back.why


def test_a_wave_heard_out_of_order_on_a_bucket_keeping_max_tokens_shows_no_give_back() -> None:
    """The same wave from a bucket keeping ``max_tokens`` charged: every reading alike, nothing
    rises, no vote for a give-back."""
    back = wave(gives_back=False)
    assert back.votes <= 0 and back.verdict is not True, back.why
