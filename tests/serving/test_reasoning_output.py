"""A <think> block comes back as reasoning_content beside content (DeepSeek API), streamed too; `tailor chat` shows
it dimmed and leaves it out of the conversation; evaluation scores the answer after it."""

import asyncio
import io
import json

from tailor.serving import chat, protocol as P, routes, structured

PIECES = ["<th", "ink>3 + 4", " = 7</thi", "nk>The answer", " is 7."]


def test_non_streamed_answer_separates_the_reasoning():
    plan = structured.ChatPlan([], None, None)
    msg, reason = structured.assistant_message("<think>3 + 4 = 7</think>The answer is 7.", plan, "stop")
    assert (msg.reasoning_content, msg.content, reason) == ("3 + 4 = 7", "The answer is 7.", "stop")
    plain, _ = structured.assistant_message("The answer is 7.", plan, "stop")
    assert (plain.reasoning_content, plain.content) == (None, "The answer is 7.")


def test_streamed_chunks_carry_reasoning_content_then_content(monkeypatch):
    async def events(st, run, request):
        for piece in PIECES:
            yield (0, piece, [], None), None
        yield (0, "", [], "stop"), None

    monkeypatch.setattr(routes, "_events", events)
    req = P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "3 + 4?"}], stream=True)

    async def collect():
        return [item async for item in routes._chat_stream(None, None, req, structured.plan_chat(req), 3, None)]

    chunks = [json.loads(c["data"]) for c in asyncio.run(collect()) if c["data"] != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert (reasoning, content) == ("3 + 4 = 7", "The answer is 7.")
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all(not d.get("reasoning_content") for d in deltas[first_content:])  # the answer comes after
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_chat_shows_reasoning_dimmed_and_keeps_only_the_answer():
    sent = []

    def answer(messages, on_text):
        sent.append([dict(m) for m in messages])
        for piece in PIECES:
            on_text(piece)
        return "".join(PIECES)

    out = Tty()
    chat._conversation(answer, None, io.StringIO("3 + 4?\nand 5 + 5?\n/exit\n"), out)
    text = out.getvalue()
    assert "\x1b[2m3 + 4\x1b[0m" in text and "The answer is 7." in text and "<think>" not in text
    assert sent[1][1] == {"role": "assistant", "content": "The answer is 7."}  # reasoning is not sent back


def test_remote_deltas_rejoin_into_the_generated_text():
    rejoin = chat._Rejoin()
    text = rejoin.feed("3 + 4", "") + rejoin.feed(" = 7", "") + rejoin.feed("", "The answer") + rejoin.feed("", " is 7.")
    assert text == "<think>3 + 4 = 7</think>The answer is 7."


def test_evaluation_scores_the_answer_after_the_block():
    from tailor.evaluation.generation import score

    rec = {"messages": [{"role": "user", "content": "3 + 4?"}, {"role": "assistant", "content": "7"}], "answer": "7"}
    _, (row,) = score([rec], ["<think>3 + 4 is 7, not 8</think>7"])
    assert row["prediction"] == "7" and row["exact_match"] == 1.0 and row["reasoning"] == "3 + 4 is 7, not 8"
    _, (wrong,) = score([rec], ["<think>it is 7</think>8"])
    assert wrong["fact_accuracy"] == 0.0  # the 7 inside the reasoning does not count
