"""The teacher model behind document QA generation (`data.sources[].document.teacher`), loaded for the data stage.

The data stage loads no model itself: `tailor data prepare` loads each teacher here and passes
`tailor.data.prepare.run` a function (model directory, conversations, max_new_tokens, batch_size) -> replies,
answered greedily through tailor's batched generation path (`tailor.models.generation.generate`).
"""

from __future__ import annotations

from pathlib import Path

from tailor.config import DataConfig
from tailor.data.documents.teacher import Teacher
from tailor.errors import TailorError


def teacher_for(data: DataConfig, base_dir: str | Path | None = None) -> Teacher | None:
    """A teacher for the sources that name one (each model loaded once, on first use), or None when none does.

    A relative document.teacher is read from `base_dir` (the recipe's folder)."""
    if not any(src.document.teacher for src in data.sources):
        return None
    loaded: dict[str, tuple] = {}

    def answer(model_dir: str, conversations: list[list[dict]], max_new_tokens: int, batch_size: int) -> list[str]:
        from tailor.models.generation import generate
        from tailor.models.loading import is_model_dir, load_model, load_tokenizer

        path = Path(model_dir).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        key = str(path)
        if key not in loaded:
            if not is_model_dir(path):
                raise TailorError(f"teacher model not found (no config.json): {path}", where="data.sources[].document.teacher",
                                  fix="point at a local instruct model directory saved with save_pretrained")
            tokenizer = load_tokenizer(path)
            if not getattr(tokenizer, "chat_template", None):
                raise TailorError(f"the teacher's tokenizer has no chat template: {path}", where="data.sources[].document.teacher",
                                  fix="use an instruct (chat) model, or save a chat_template.jinja beside its tokenizer")
            loaded[key] = (load_model(path), tokenizer)
        model, tokenizer = loaded[key]
        return generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size)

    return answer
