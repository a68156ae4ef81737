"""Default cache keys: stable, order-free, complete, and loud when they cannot be built."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmguard._cache.key import IGNORED_KWARGS, custom_key, default_key, stable_digest


async def chat(**kwargs):
    return kwargs


class Agent:
    async def ask(self, prompt):
        return prompt


MSGS = [{"role": "user", "content": "hi"}]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_key_ignores_dict_order(kwargs):
    """Two calls whose kwargs differ only in insertion order (at any depth) share a key."""
    reordered = dict(reversed(list(kwargs.items())))
    assert default_key(chat, (), kwargs) == default_key(chat, (), reordered)


def test_key_is_a_stable_hex_digest():
    """The key is a sha256 hex string that does not depend on the process (no salted hash)."""
    key = default_key(chat, (), {"model": "m", "messages": MSGS})
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == default_key(chat, (), {"messages": MSGS, "model": "m"})
    assert stable_digest({"b": 1, "a": [1, 2]}) == stable_digest({"a": (1, 2), "b": 1})


@pytest.mark.parametrize(
    "change",
    [{"model": "other"}, {"temperature": 0.7}, {"seed": 2}, {"tools": [{"type": "function"}]},
     {"response_format": {"type": "json_object"}}, {"max_tokens": 5},
     {"messages": [{"role": "user", "content": "ho"}]}],
)
def test_every_output_affecting_argument_changes_the_key(change):
    """Changing any argument that affects the answer gives a different key."""
    base = {"model": "m", "messages": MSGS, "temperature": 0.0, "seed": 1}
    assert default_key(chat, (), base) != default_key(chat, (), {**base, **change})


@pytest.mark.parametrize("name", sorted(IGNORED_KWARGS))
def test_transport_arguments_do_not_change_the_key(name):
    """timeout, api_key, metadata, user, ... do not affect the answer, so they share the entry."""
    base = {"model": "m", "messages": MSGS}
    assert default_key(chat, (), base) == default_key(chat, (), {**base, name: "x"})


def test_function_identity_is_part_of_the_key():
    """The same arguments to two different functions never share an entry."""

    async def other(**kwargs):
        return kwargs

    assert default_key(chat, (), {"a": 1}) != default_key(other, (), {"a": 1})


def test_method_receiver_is_part_of_the_identity_unless_a_namespace_is_given():
    """Two instances keep their own entries; under one namespace they share them (and the key
    no longer depends on this process); a different prompt is always a different key."""
    a, b = Agent(), Agent()
    assert default_key(Agent.ask, (a, "p"), {}) == default_key(Agent.ask, (a, "p"), {})
    assert default_key(Agent.ask, (a, "p"), {}) != default_key(Agent.ask, (b, "p"), {})
    assert default_key(Agent.ask, (a, "p"), {}, "ns") == default_key(Agent.ask, (b, "p"), {}, "ns")
    assert default_key(Agent.ask, (a, "p"), {}, "ns") != default_key(Agent.ask, (a, "q"), {}, "ns")


def test_positional_keyword_and_default_forms_are_one_key():
    """Arguments are bound to the signature: ``f("hi")``, ``f(prompt="hi")``, ``f("hi", 0.0)``
    and ``f("hi", temperature=0.0)`` are one call; sentinel defaults (the openai SDK's ``omit``)
    never reach the key."""

    class Omit:
        pass

    omit = Omit()

    async def ask(prompt, temperature=0.0, audio=omit, **extra):
        return prompt

    forms = [(("hi",), {}), ((), {"prompt": "hi"}), (("hi", 0.0), {}),
             (("hi",), {"temperature": 0.0, "audio": omit})]
    assert len({default_key(ask, args, kwargs) for args, kwargs in forms}) == 1
    assert default_key(ask, ("hi",), {"seed": 1}) == default_key(ask, (), {"seed": 1, "prompt": "hi"})
    assert default_key(ask, ("hi", 0.5), {}) != default_key(ask, ("hi",), {})


def test_objects_with_fields_are_canonicalised():
    """Dataclasses and pydantic models are keyed by their fields, not their identity."""

    @dataclasses.dataclass
    class Opt:
        temperature: float

    assert default_key(chat, (Opt(0.1),), {}) == default_key(chat, (Opt(0.1),), {})
    assert default_key(chat, (Opt(0.1),), {}) != default_key(chat, (Opt(0.2),), {})
    pydantic = pytest.importorskip("pydantic")

    class Answer(pydantic.BaseModel):
        text: str

    assert default_key(chat, (), {"response_format": Answer}) == default_key(
        chat, (), {"response_format": Answer})


def test_unserialisable_argument_is_a_clear_error():
    """An argument with no stable form raises TypeError naming where it is: never a wrong key."""
    with pytest.raises(TypeError, match=r"\['messages'\]\[0\]\['content'\] is a object.*Cache\(key="):
        default_key(chat, (), {"messages": [{"role": "user", "content": object()}]})


def test_custom_key_results():
    """A custom key's str is used as is, a hashable tuple is digested, an unhashable is an error."""
    assert custom_key(lambda p: p, ("abc",), {}) == "abc"
    assert custom_key(lambda p: ("x", p), ("abc",), {}) == stable_digest(("x", "abc"))
    with pytest.raises(TypeError, match="unhashable list"):
        custom_key(lambda p: [p], ("abc",), {})


def test_remembered_keys_of_str_arguments_are_the_computed_ones():
    """The in-memory Keyer remembers the keys of all-str positional calls: each is the key it
    computes afresh, per function; equal-comparing non-str arguments (1, 1.0, True) are never
    looked up there, so they keep keys of their own."""
    from llmguard._cache.keyer import MEMO, Keyer

    async def ask(prompt, temperature=0.0):
        return prompt

    async def other(prompt, temperature=0.0):
        return prompt

    keyer = Keyer(None, hashed=False)
    first = keyer(ask, ("hello",), {})
    assert keyer(ask, ("hello",), {}) == first == keyer._text(ask, keyer._plans[id(ask)],
                                                              ("hello",), {})
    assert keyer(ask, ("hello",), {}) == keyer(ask, (), {"prompt": "hello"})
    assert keyer(other, ("hello",), {}) != first
    assert len({keyer(ask, (value,), {}) for value in ("1", 1, 1.0, True)}) == 4
    for i in range(MEMO + 5):  # bounded
        keyer(ask, (f"q{i}",), {})
    assert len(keyer._plans[id(ask)].memo) <= MEMO


def test_keys_of_a_one_parameter_functions_str_calls_are_the_computed_ones():
    """A one-parameter function's str call is keyed by one concatenation, not remembered: the
    key is the one the general path computes (and its keyword form's), and a non-str argument
    equal as a dict key keeps a key of its own."""
    from llmguard._cache.keyer import Keyer

    async def ask(prompt):
        return prompt

    keyer = Keyer(None, hashed=False)
    first = keyer(ask, ("1",), {})
    plan = keyer._plans[id(ask)]
    assert plan.single is not None and not plan.memo
    assert first == keyer._text(ask, plan, ("1",), {}) == keyer(ask, (), {"prompt": "1"})
    assert len({first, keyer(ask, (1,), {}), keyer(ask, (1.0,), {})}) == 3


@given(st.lists(st.text(), min_size=2, max_size=2), st.sampled_from([None, "ns"]))
def test_keys_of_str_calls_to_plain_functions_are_the_canonical_ones(prompts, namespace):
    """A plain function's all-str call is keyed by quoting each argument (no form, no
    encoder): the text is the one the canonical encoder writes, whatever the str holds (quotes,
    escapes, non-ASCII, lone surrogates), so its keyword form is the same entry."""
    from llmguard._cache.keyer import Keyer

    async def ask(system, prompt):
        return prompt

    keyer = Keyer(namespace, hashed=False)
    system, prompt = prompts
    fast = keyer(ask, (system, prompt), {})
    assert keyer._plans[id(ask)].prefix is not None
    assert fast == keyer._text(ask, keyer._plans[id(ask)], (system, prompt), {})
    assert fast == keyer(ask, (), {"prompt": prompt, "system": system})


@given(st.text(), st.one_of(st.text(), st.integers(), st.none(), st.lists(st.text(), max_size=2)),
       st.sampled_from([None, "ns"]))
def test_a_one_parameter_functions_str_call_is_keyed_by_the_str_itself(prompt, other, namespace):
    """``send_message(prompt)``: the key is the function's identity then the str as it is (no
    quoting); its keyword form is the same entry, and no other argument (a different
    str, a non-str of any form) and no other function shares it."""
    from llmguard._cache.keyer import Keyer

    async def ask(prompt):
        return prompt

    async def tell(prompt):
        return prompt

    keyer = Keyer(namespace, hashed=False)
    key = keyer(ask, (prompt,), {})
    assert key == keyer(ask, (), {"prompt": prompt}) == keyer._text(
        ask, keyer._plans[id(ask)], (prompt,), {})
    assert key != keyer(tell, (prompt,), {})
    assert (keyer(ask, (other,), {}) == key) == (other == prompt and type(other) is str)
