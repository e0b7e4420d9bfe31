"""`tailor serve` with a vision-language model: image_url parts through the batched engine, answered as
`tailor chat --image` answers (greedy), and the image limits and bad inputs as OpenAI-shaped 400s."""

import base64
import io
import threading

import openai
import pytest
from PIL import Image

from tailor.config import ServeConfig
from tailor.models.loading import load_tokenizer
from tailor.models.vision import init_vision_model
from tailor.serving.engine import Engine, Sequence
from tailor.serving.vision import load_vision_for_serving, vision_answer, vision_chat, vision_prompt

PROMPT = "Is this part defective?"


def _part(color, size=(40, 30)) -> Image.Image:
    img = Image.new("RGB", size, color)
    for x in range(5, 25):  # a dark scratch, so the images differ in more than their colour
        img.putpixel((x, size[1] // 2), (10, 10, 10))
    return img


def _data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def _ask(url: str, text: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def vlm(tokenizer_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vlm")
    init_vision_model("deepseek-vl-micro", load_tokenizer(tokenizer_dir), out_dir=tmp / "vlm")
    paths = []
    for name, color in (("red", (200, 30, 30)), ("blue", (20, 40, 220))):
        _part(color).save(tmp / f"{name}.png")
        paths.append(tmp / f"{name}.png")
    return tmp, paths


@pytest.fixture(scope="module")
def vlm_server(vlm, serve_process):
    tmp, _ = vlm
    args = [str(tmp / "vlm"), "max_images=2", "max_image_pixels=10000", "max_batch_size=4", "--model-name", "vlm"]
    with serve_process(args, tmp / "server.log") as base:
        yield base


def test_served_answer_equals_chat_image_plain_and_streamed(vlm, vlm_server):
    tmp, paths = vlm
    client = openai.OpenAI(base_url=vlm_server + "/v1", api_key="none", max_retries=0, timeout=60)
    answers = []
    for path in paths:
        expected = vision_chat(tmp / "vlm", None, PROMPT, [str(path)], max_new_tokens=8)
        messages = _ask(_data_url(Image.open(path)))
        r = client.chat.completions.create(model="vlm", messages=messages, max_tokens=8, temperature=0)
        assert r.choices[0].message.content == expected
        assert r.usage.prompt_tokens > 16  # the image's 16 tokens are in the prompt
        chunks = client.chat.completions.create(model="vlm", messages=messages, max_tokens=8, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        answers.append(expected)
    assert answers[0] != answers[1], "the test images must change the answer (the image reaches the model)"
    # concurrent requests (batched together by the engine) each get their own image's answer
    from concurrent.futures import ThreadPoolExecutor

    urls = [_data_url(Image.open(p)) for p in paths] * 3
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda u: client.chat.completions.create(model="vlm", messages=_ask(u), max_tokens=8,
                                                                     temperature=0).choices[0].message.content, urls))
    assert got == answers * 3
    # /generate takes the same messages
    import httpx

    r = httpx.post(vlm_server + "/generate", json={"messages": _ask(_data_url(Image.open(paths[0]))), "max_tokens": 8})
    assert r.status_code == 200 and r.json()["text"] == answers[0]


def test_bad_images_get_400s_naming_the_field(vlm, vlm_server):
    tmp, paths = vlm
    client = openai.OpenAI(base_url=vlm_server + "/v1", api_key="none", max_retries=0, timeout=60)
    field = "messages[0].content[0].image_url.url"
    good = _data_url(Image.open(paths[0]))
    cases = [
        (_ask("https://example.com/part.png"), field, "offline"),
        (_ask("/etc/passwd"), field, "data:image"),
        (_ask("data:text/plain,hello"), field, "data:image/png;base64"),
        (_ask("data:image/png;base64,@@not base64@@"), field, "base64"),
        (_ask("data:image/png;base64," + base64.b64encode(b"not an image at all").decode()), field, "unreadable image"),
        (_ask(_data_url(_part((1, 2, 3), size=(200, 100)))), field, "max_image_pixels"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": good}}] * 3
           + [{"type": "text", "text": PROMPT}]}], "messages", "serve.max_images"),
        (_ask(good, "<image> and " + PROMPT), "messages", "placeholders"),
    ]
    for messages, param, words in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="vlm", messages=messages, max_tokens=4)
        assert e.value.body["param"] == param and words in e.value.message, (messages[0]["content"][0], e.value.message)
    with pytest.raises(openai.BadRequestError, match="only in user messages"):
        client.chat.completions.create(model="vlm", max_tokens=4, messages=[
            *_ask(good), {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": good}}]}])
    assert "Traceback" not in (tmp / "server.log").read_text()


def test_image_bytes_limit_names_its_setting(vlm):
    from tailor.serving.structured import BadRequest
    from tailor.serving.vision import load_request_images

    _, paths = vlm
    url = _data_url(Image.open(paths[0]))
    with pytest.raises(BadRequest) as e:
        load_request_images([("messages[0].content[0].image_url.url", url)], ServeConfig(max_image_bytes=50))
    assert e.value.param == "messages[0].content[0].image_url.url" and "serve.max_image_bytes" in e.value.message
    assert len(load_request_images([("f", url)], ServeConfig())) == 1


def test_engine_prefills_image_rows_together_with_text_rows(vlm):
    """Rows of different lengths, two with images and one without, prefilled in one batch: each answer equals the
    model's own greedy answer for that row alone."""
    tmp, paths = vlm
    model, processor = load_vision_for_serving(tmp / "vlm", ServeConfig())
    rows = [([{"role": "user", "content": "<image>" + PROMPT}], [str(paths[0])]),
            ([{"role": "user", "content": "<image>What is wrong with it? Tell me."}], [str(paths[1])]),
            ([{"role": "user", "content": "Hello there"}], [])]
    expected = [vision_answer(model, processor, m, imgs, max_new_tokens=6) for m, imgs in rows]
    engine = Engine(model, processor.tokenizer, max_batch_size=4, processor=processor)
    texts, ended, done = [""] * 3, [], threading.Event()

    def collect(i):
        def on_event(ev):
            texts[i] += ev.text
            if ev.kind != "delta":
                ended.append(i)
                if len(ended) == len(rows):
                    done.set()
        return on_event

    seqs = []
    for i, (messages, imgs) in enumerate(rows):
        ids, images = vision_prompt(processor, messages, imgs)
        seqs.append(Sequence(prompt_ids=ids, max_tokens=6, on_event=collect(i), image_inputs=images or None))
    assert len({len(s.prompt_ids) for s in seqs}) == 3  # left padding differs per row
    engine.submit(seqs)  # queued before the loop starts: admitted and prefilled in one forward pass
    try:
        engine.start()
        assert done.wait(timeout=120)
    finally:
        engine.stop()
    assert texts == expected

