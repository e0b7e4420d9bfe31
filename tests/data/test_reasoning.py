"""R1-style <think> blocks: where the answer starts, for whole texts and for streamed pieces."""

import random

import pytest

from tailor.data.reasoning import ReasoningStream, answer_of, split_reasoning, well_formed


@pytest.mark.parametrize("text,expected", [
    ("<think>3 + 4 = 7</think>The answer is 7.", ("3 + 4 = 7", "The answer is 7.")),
    ("  <think>\nadd\n</think>\n\n7", ("add", "7")),
    ("add them</think>7", ("add them", "7")),            # the prompt opened the block (R1's template)
    ("<think>still thinking", ("still thinking", "")),  # cut off while thinking: no answer
    ("Just 7.", (None, "Just 7.")),
    ("", (None, "")),
])
def test_split_reasoning(text, expected):
    assert split_reasoning(text) == expected


def test_well_formed_needs_a_block_and_an_answer():
    assert well_formed("<think>a</think> 7")
    assert not well_formed("<think>a</think>") and not well_formed("7") and not well_formed("<think></think>7")
    assert answer_of("<think>x</think>Paris") == "Paris"


@pytest.mark.parametrize("text", ["<think>add 3 and 4</think>The answer is 7.", "No block at all <think> here",
                                  "  <think>多想一下</think>答案是7。", "<thinking is not a tag>"])
def test_streamed_pieces_split_like_the_whole_text(text):
    rng = random.Random(0)
    for _ in range(20):
        stream, reasoning, content, i = ReasoningStream(), "", "", 0
        while i < len(text):
            n = rng.randint(1, 4)
            r, c = stream.feed(text[i:i + n])
            reasoning, content, i = reasoning + r, content + c, i + n
        r, c = stream.flush()
        reasoning, content = reasoning + r, content + c
        want_reasoning, want_answer = split_reasoning(text)
        assert reasoning.strip() == (want_reasoning or "")
        assert content.strip() == want_answer.strip()
