"""Training, evaluation and serving render the same prompt token ids for the same conversation.

Training's ids come from `encode_conversation` (the prefix before the assistant turn it learns);
evaluation's and chat's from what their code actually hands to `model.generate`, captured by a
stand-in model, so a path that stopped calling `encode_prompt` would fail here.
"""

import threading

import pytest
import torch

from tailor.data.templates import encode_conversation, encode_prompt, set_chat_template
from tailor.config import EvalConfig
from tailor.evaluation import efficiency
from tailor.models.generation import generate
from tailor.models.loading import load_tokenizer
from tailor.serving.chat import stream_answer
from tests.conftest import CONVERSATIONS

MORE = [
    [{"role": "user", "content": "  spaces and\nnew lines  "}, {"role": "assistant", "content": "ok"}],
    [{"role": "system", "content": "简短回答。"}, {"role": "user", "content": "发往北部地区要多久？"}, {"role": "assistant", "content": "3到5个工作日。"}],
]


class RecordingModel(torch.nn.Module):
    """Answers every prompt with EOS at once and remembers the prompts it was given (padding removed)."""

    def __init__(self, eos: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.eos = eos
        self.prompts: list[list[int]] = []
        self.lock = threading.Lock()

    def generate(self, input_ids, attention_mask, streamer=None, **kwargs):
        with self.lock:
            for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
                self.prompts.append([t for t, m in zip(ids, mask) if m])
        out = torch.cat([input_ids, torch.full((input_ids.shape[0], 1), self.eos)], 1)
        if streamer is not None:
            streamer.put(input_ids.cpu())
            streamer.put(out[:, -1].cpu())
            streamer.end()
        return out


def _training_prefix(tokenizer, conv):
    """Training's tokens before the last assistant turn (where its loss starts): the prompt for that turn."""
    labels = encode_conversation(tokenizer, conv, 4096)["labels"]
    start = max(i for i in range(1, len(labels)) if labels[i] != -100 and labels[i - 1] == -100)
    return encode_conversation(tokenizer, conv, 4096)["input_ids"][:start]


@pytest.mark.parametrize("template", [None, "chatml"])
def test_training_eval_and_serving_prompts_are_identical(tokenizer_dir, template):
    tok = load_tokenizer(tokenizer_dir)
    set_chat_template(tok, template)
    convs = CONVERSATIONS + MORE
    model = RecordingModel(tok.eos_token_id)
    generate(model, tok, convs, max_new_tokens=1, batch_size=3)  # evaluation (left-padded batches)
    eval_prompts = list(model.prompts)
    model.prompts.clear()
    for conv in convs:  # serving's chat path
        stream_answer(model, tok, conv[:-1], max_new_tokens=1)
    chat_prompts = list(model.prompts)
    model.prompts.clear()
    efficiency.time_requests(model, tok, convs, EvalConfig(max_new_tokens=1, efficiency_requests=len(convs)))
    timed_prompts = list(model.prompts)
    for i, conv in enumerate(convs):
        train = _training_prefix(tok, conv)
        assert len(train) > 3
        assert train == encode_prompt(tok, conv) == eval_prompts[i] == chat_prompts[i] == timed_prompts[i], i
    # the prompt ends with the template's assistant header, so nothing of the answer leaks into it
    assert tok.decode(eval_prompts[0]).rstrip().endswith("<｜Assistant｜>" if template is None else "assistant")
