"""`tailor chat --image`: the prompt's tokens equal what the model's own processor makes, and the CLI prints the
greedy answer of that input."""

import torch
from PIL import Image

from tailor.cli import main
from tailor.data.images import prompt_inputs
from tailor.data.templates import render
from tailor.models.loading import load_tokenizer
from tailor.models.vision import init_vision_model


def test_chat_image_answer_is_the_processor_inputs_greedy_answer(tmp_path, tokenizer_dir, capsys):
    model, processor = init_vision_model("deepseek-vl-micro", load_tokenizer(tokenizer_dir), out_dir=tmp_path / "vlm")
    Image.new("RGB", (50, 40), (200, 20, 20)).save(tmp_path / "part.png")
    messages = [{"role": "user", "content": "<image>Is this part defective?"}]
    ours = prompt_inputs(processor, messages, [str(tmp_path / "part.png")])
    text = render(processor.tokenizer, [{"role": "user", "content": processor.image_token + "Is this part defective?"}],
                  add_generation_prompt=True)
    theirs = processor(text=[text], images=[Image.open(tmp_path / "part.png").convert("RGB")], return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"])
    with torch.no_grad():
        gen = model.eval().generate(**ours, do_sample=False, max_new_tokens=5, pad_token_id=processor.tokenizer.pad_token_id)
    expected = processor.tokenizer.decode(gen[0, ours["input_ids"].shape[1]:], skip_special_tokens=True)
    assert main(["chat", str(tmp_path / "vlm"), "--image", str(tmp_path / "part.png"), "--prompt",
                 "Is this part defective?", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_text_only_commands_refuse_a_vision_model_clearly(tmp_path, tokenizer_dir, capsys):
    init_vision_model("deepseek-vl-micro", load_tokenizer(tokenizer_dir), out_dir=tmp_path / "vlm")
    code = main(["quantize", str(tmp_path / "vlm"), "--method", "int8-dynamic", "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code != 0 and "vision-language model" in err and "AutoModelForImageTextToText" in err
