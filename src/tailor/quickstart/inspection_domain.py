"""A synthetic product-inspection domain: rendered parts with or without a defect, and questions about them.

Each image shows one machined part (a disc, a plate or a bracket) on a background, at a random position, scale and
lighting, with one of: no defect, a scratch, a dent, a discoloration or a missing piece. Questions come in English
and Chinese ("Is this part defective?", "缺陷类型是什么？"); the evaluation set uses images drawn with other seeds
and question wordings never seen in training. Everything is deterministic in the seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

DEFECTS = ("none", "scratch", "dent", "discoloration", "missing")
TYPE_ANSWER = {"en": {"none": "no defect", "scratch": "a scratch", "dent": "a dent", "discoloration": "discoloration",
                      "missing": "a missing piece"},
               "zh": {"none": "没有缺陷", "scratch": "划痕", "dent": "凹痕", "discoloration": "变色", "missing": "缺件"}}
# Question cores per language and kind, and prefixes: a wording is prefix + core + mark. Training uses the
# combinations with (prefix + core) % len(prefixes) != 0; evaluation only the others, never seen in training.
QUESTIONS = {
    ("en", "defect"): ["Is this part defective", "Does this part have a defect", "Is the part OK",
                       "Would this part pass inspection", "Is anything wrong with this part"],
    ("en", "type"): ["What is wrong with it", "What kind of defect does it have", "Name the defect",
                     "Which defect do you see", "What type of defect is this"],
    ("zh", "defect"): ["这个零件有缺陷吗", "零件合格吗", "这个零件能通过检验吗", "零件有问题吗"],
    ("zh", "type"): ["缺陷类型是什么", "这是什么缺陷", "零件上有哪种缺陷", "是哪一类缺陷"],
}
PREFIXES = {"en": ["", "Quick check: ", "Inspector here. ", "Please look: "], "zh": ["", "请看：", "质检：", "帮我看看，"]}
MARK = {"en": "?", "zh": "？"}


def wordings(lang: str, kind: str, held_out: bool) -> list[str]:
    """The question wordings of the training set (held_out=False) or of the evaluation set (True)."""
    prefixes, cores = PREFIXES[lang], QUESTIONS[(lang, kind)]
    return [p + c + MARK[lang] for i, p in enumerate(prefixes) for j, c in enumerate(cores)
            if ((i + j) % len(prefixes) == 0) == held_out]


def answer(lang: str, kind: str, defect: str) -> str:
    """The reference answer: yes/no for the defect question, the defect's name for the type question."""
    if kind == "defect":  # statements, not yes/no: the questions ask both "is it defective?" and "is it OK?"
        if lang == "en":
            return "Good: no defect." if defect == "none" else "Defective."
        return "合格，没有缺陷。" if defect == "none" else "不合格，有缺陷。"
    name = TYPE_ANSWER[lang][defect]
    if lang == "en":
        return "Nothing, it has no defect." if defect == "none" else f"It has {name}."
    return f"{name}。" if defect == "none" else f"缺陷是{name}。"


def render(defect: str, rng: random.Random, size: int = 64):
    """One inspection image (PIL, RGB) of a part with `defect`, and the part's shape (disc, plate or bracket)."""
    from PIL import Image, ImageDraw

    # Coloured work mats (green, blue, brown, purple), never grey: a missing piece shows the mat, a dent stays grey.
    mat = rng.choice(((40, 100, 60), (40, 65, 120), (110, 75, 40), (80, 45, 100)))
    bg = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in mat)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    light = rng.uniform(0.8, 1.15)
    metal = tuple(min(255, int(c * light)) for c in (170, 175, 185))
    r = rng.uniform(0.28, 0.40) * size
    cx, cy = rng.uniform(r + 2, size - r - 2), rng.uniform(r + 2, size - r - 2)
    shape = rng.choice(("disc", "plate", "bracket"))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "plate":
        d.rectangle(box, fill=metal)
    elif shape == "bracket":  # a rounded rectangle, wider than tall
        d.rounded_rectangle((cx - r, cy - r * 0.75, cx + r, cy + r * 0.75), radius=r * 0.3, fill=metal)
    else:
        d.ellipse(box, fill=metal)
    # defects sit on the part's body
    a = rng.uniform(0, 6.283)
    from math import cos, sin

    px, py = cx + 0.6 * r * cos(a), cy + 0.6 * r * sin(a)
    # Defects are drawn large and in high contrast: the vision tower learns from scratch on a CPU in minutes.
    if defect == "scratch":
        dx, dy = 0.8 * r * cos(a + 1.3), 0.8 * r * sin(a + 1.3)
        px, py = (px + cx) / 2, (py + cy) / 2
        d.line((px - dx, py - dy, px + dx, py + dy), fill=tuple(int(c * 0.15) for c in metal), width=3)
    elif defect == "dent":
        s = r * rng.uniform(0.28, 0.36)
        d.ellipse((px - s * 1.2, py - s * 1.2, px + s * 1.2, py + s * 1.2), fill=tuple(min(255, int(c * 1.35)) for c in metal))
        d.ellipse((px - s, py - s, px + s, py + s), fill=tuple(int(c * 0.3) for c in metal))
    elif defect == "discoloration":
        s = r * rng.uniform(0.4, 0.5)
        tint = (min(255, int(metal[0] * 1.3)), int(metal[1] * 0.6), int(metal[2] * 0.15))
        d.ellipse((px - s, py - s, px + s, py + s), fill=tint)
    elif defect == "missing":
        s = r * 0.75
        ex, ey = cx + 0.9 * r * cos(a), cy + 0.9 * r * sin(a)
        d.polygon([(ex, ey), (ex + s * cos(a + 2.2), ey + s * sin(a + 2.2)), (ex + s * cos(a - 2.2), ey + s * sin(a - 2.2))],
                  fill=bg)
        d.ellipse((ex - s * 0.5, ey - s * 0.5, ex + s * 0.5, ey + s * 0.5), fill=bg)
    return img, shape


@dataclass
class InspectionDomain:
    train: list[dict] = field(default_factory=list)     # conversations about one image (both questions)
    captions: list[dict] = field(default_factory=list)  # image-caption pairs for contrastive alignment
    eval: list[dict] = field(default_factory=list)      # held-out images and wordings, with labels


def _row(image: str, question: str, reference: str, **labels) -> dict:
    return {"messages": [{"role": "user", "content": f"<image>{question}"}, {"role": "assistant", "content": reference}],
            "images": [image], **labels}


def generate(out_dir: Path, seed: int = 0, train_images: int = 600, eval_images: int = 100, size: int = 64) -> InspectionDomain:
    """Render the images under out_dir/images and return the rows (image paths relative to out_dir)."""
    rng = random.Random(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    dom = InspectionDomain()
    for split, n in (("train", train_images), ("eval", eval_images)):
        for i in range(n):
            defect = DEFECTS[i % len(DEFECTS)]
            name = f"images/{split}-{i:04d}.png"
            img, shape = render(defect, rng, size)
            img.save(out_dir / name)
            for lang in ("en", "zh"):
                if split == "train":  # one conversation per language: both questions, in random order
                    kinds = rng.sample(["defect", "type"], 2)
                    turns = [m for k in kinds for m in (
                        {"role": "user", "content": rng.choice(wordings(lang, k, held_out=False))},
                        {"role": "assistant", "content": answer(lang, k, defect)})]
                    turns[0] = {**turns[0], "content": "<image>" + turns[0]["content"]}
                    dom.train.append({"messages": turns, "images": [name]})
                    continue
                for kind in ("defect", "type"):
                    question = rng.choice(wordings(lang, kind, held_out=True))
                    dom.eval.append(_row(name, question, answer(lang, kind, defect), defect=defect, kind=kind,
                                         lang=lang))
            if split == "train":
                # Captions name the shape too: more distinct captions per batch give the contrastive loss more to learn.
                what = "no defect" if defect == "none" else TYPE_ANSWER["en"][defect]
                dom.captions.append(_row(name, "", f"a metal {shape} with {what}"))
    return dom


def write(dom: InspectionDomain, out_dir: Path) -> dict[str, Path]:
    files = {}
    for name, rows in (("train", dom.train), ("captions", dom.captions), ("eval", dom.eval)):
        files[name] = out_dir / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return files
