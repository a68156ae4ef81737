"""``ratelimit.others.Others``: the other processes' admissions a shared backend keeps for
learning (pure: no clock)."""

from llmguard._admission.ratelimit.log import Entry
from llmguard._admission.ratelimit.others import Others


def weight(entry: Entry) -> int:
    return entry.tokens


def test_units_leave_refused_ones_out_and_ends_are_kept():
    """Units count what the server counted (a refused admission counts nothing); an end
    recorded is kept (the earliest, if recorded twice); an unknown id's end is ignored."""
    others = Others()
    others.admitted("a.1", 1.0, 10, False)
    others.admitted("a.2", 2.0, 20, True)
    others.admitted("b.1", 3.0, 30, False)
    others.ended("a.1", 5.0)
    others.ended("a.1", 6.0)
    others.ended("nobody", 4.0)
    assert others.units(weight, lambda e: True) == 40
    assert others.units(weight, lambda e: e.answered <= 5.0) == 10
    assert others.entries["a.1"].answered == 5.0
    assert others.latest() == 3.0


def test_forget_drops_the_oldest_only():
    """Admissions read oldest first are forgotten from the front, up to ``before``."""
    others = Others()
    for i in range(5):
        others.admitted(f"a.{i}", float(i), 1, False)
    others.forget(2.5)
    assert list(others.entries) == ["a.3", "a.4"]
    others.forget(10.0)
    assert others.latest() is None
