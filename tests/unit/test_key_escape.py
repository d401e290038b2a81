"""Ids inside a hash tag: ``% : { }`` escaped (a thread id may hold any of them)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from durable_graph.store.redis.keys import ThreadKeys, escape, unescape

ids = st.text() | st.text(alphabet="ab%:{}3A7BD", max_size=12)


@settings(max_examples=400, deadline=None)
@given(ids)
def test_escaped_ids_hold_no_tag_character_and_come_back(text: str) -> None:
    out = escape(text)
    assert not set(out) & set(":{}")
    assert unescape(out) == text
    if not set(text) & set("%:{}"):
        assert out == text


def test_each_special_character_is_escaped_in_place() -> None:
    assert escape("a:b{c}d%e") == "a%3Ab%7Bc%7Dd%25e"
    assert escape("%3A") == "%253A"  # an escape-looking id stays itself after unescape
    assert ThreadKeys("p", "t:{1}").record == "{p:t%3A%7B1%7D}:rec"
