"""``Usage`` is a tuple underneath (made in one C call on every answered call) with a frozen
dataclass's surface: each behaviour here is checked against a frozen dataclass of the same
fields."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

import llmguard as lg
from llmguard import Usage, extract_usage


@dataclasses.dataclass(frozen=True)
class Reference:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


def test_fields_defaults_repr_and_total_as_the_dataclass() -> None:
    usage = Usage(3, 4, cache_read_tokens=2)
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_creation_tokens, usage.total_tokens) == (3, 4, 2, 0, 7)
    assert repr(usage) == repr(Reference(3, 4, 2)).replace("Reference", "Usage")
    assert repr(Usage()) == "Usage(input_tokens=0, output_tokens=0, cache_read_tokens=0, " \
                            "cache_creation_tokens=0)"
    assert type(usage).__module__ == "llmguard" and lg.Usage is Usage


def test_equal_and_hashed_as_the_dataclass_never_as_a_plain_tuple() -> None:
    usage = Usage(3, 4)
    assert usage == Usage(3, 4) and not usage != Usage(3, 4)
    assert usage != Usage(3, 5) and not usage == Usage(3, 5)
    for plain in ((3, 4, 0, 0), Reference(3, 4)):  # neither a tuple nor a dataclass is equal
        assert usage != plain and plain != usage
        assert not usage == plain and not plain == usage
    assert hash(usage) == hash(Usage(3, 4)) == hash(dataclasses.astuple(Reference(3, 4)))
    assert {usage: "a"}[Usage(3, 4)] == "a"


def test_immutable_and_unordered_as_a_frozen_dataclass() -> None:
    usage = Usage(3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        usage.input_tokens = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del usage.output_tokens  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        usage.anything = 1  # type: ignore[attr-defined]
    for compare in (lambda: usage < Usage(5), lambda: usage >= usage, lambda: usage < (9,),
                    lambda: (9,) > usage):
        with pytest.raises(TypeError, match="not supported"):
            compare()
    assert usage.input_tokens == 3


def test_pickles_copies_and_works_with_the_dataclasses_functions() -> None:
    usage = Usage(3, 4, 2, 1)
    for again in (pickle.loads(pickle.dumps(usage)), copy.copy(usage), copy.deepcopy(usage)):
        assert type(again) is Usage and again == usage
    assert dataclasses.is_dataclass(usage)
    assert [f.name for f in dataclasses.fields(Usage)] == [
        f.name for f in dataclasses.fields(Reference)]
    assert dataclasses.asdict(usage) == dataclasses.asdict(Reference(3, 4, 2, 1))
    assert dataclasses.replace(usage, output_tokens=9) == Usage(3, 9, 2, 1)
    match usage:
        case Usage(3, output):
            assert output == 4
        case _:
            pytest.fail("no positional match")


def test_the_read_usage_is_a_usage() -> None:
    """What ``extract_usage`` makes (its one-call shortcut for parsed JSON included) is a
    ``Usage`` like any other."""
    read = extract_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4,
                                    "prompt_tokens_details": {"cached_tokens": 2}}})
    assert type(read) is Usage and read == Usage(3, 4, 2, 0)
    assert repr(read) == repr(Usage(3, 4, 2))
