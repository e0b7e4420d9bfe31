"""The translator model behind back-translation (`data.augment.back_translation`), loaded for the data stage.

The data stage loads no model itself: `tailor data prepare` and training load the translator here and pass
it to `tailor.data.augment.augment_records` as a function texts, src_lang, tgt_lang -> texts.
"""

from __future__ import annotations

from pathlib import Path

from tailor.config import BackTranslationConfig
from tailor.data.augment import Translator
from tailor.errors import TailorError

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German",
                  "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ru": "Russian", "ar": "Arabic", "vi": "Vietnamese"}


def translator_for(cfg: BackTranslationConfig, base_dir: str | Path | None = None) -> Translator | None:
    """The translator `cfg` asks for, or None when back-translation is off or names no model.

    A relative `cfg.model` is read from `base_dir` (the recipe's folder).
    """
    if cfg.rate <= 0 or not cfg.model:
        return None
    path = Path(cfg.model).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return load_translator(str(path), max_new_tokens=cfg.max_new_tokens)


def load_translator(model_dir: str, max_new_tokens: int = 128, batch_size: int = 8,
                    device: str | None = None) -> Translator:
    """A translate(texts, src_lang, tgt_lang) function over a local model directory (greedy, batched).

    Encoder-decoder checkpoints (T5, Marian, ...) get "translate English to Chinese: {text}"; causal
    LMs are asked "Translate the following English text to Chinese:" through their chat template
    when they have one (else as plain text, keeping as many output lines as the input had). Inputs
    that do not fit the model's context come back as "" and are counted as empty translations.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from tailor.data.templates import encode_prompt
    from tailor.models.loading import is_model_dir, load_model, load_tokenizer, resolve_device, resolve_dtype

    if not is_model_dir(model_dir):
        raise TailorError(f"translator model not found (no config.json): {model_dir}",
                          where="data.augment.back_translation.model",
                          fix="point at a local model directory saved with save_pretrained")
    try:
        seq2seq = bool(getattr(AutoConfig.from_pretrained(model_dir, local_files_only=True), "is_encoder_decoder", False))
    except (OSError, ValueError) as e:
        raise TailorError(f"cannot read the translator's config.json: {e}", where=model_dir,
                          fix="use a model directory saved with save_pretrained by a recent transformers") from None
    tok = load_tokenizer(model_dir)
    target = resolve_device(device)
    if seq2seq:
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, local_files_only=True, use_safetensors=True,
                                                          dtype=resolve_dtype("auto", target)).to(target).eval()
        except (OSError, ValueError) as e:
            raise TailorError(f"could not load the translator in {model_dir}: {e}", where=model_dir,
                              fix="save the model with save_pretrained (safetensors weights)") from None
    else:
        model = load_model(model_dir, device=str(target))
        tok.padding_side = "left"  # decoder-only models continue from the last position of each row
    limit = getattr(model.config, "max_position_embeddings", None)
    chat = bool(getattr(tok, "chat_template", None))

    def encode(text: str, src: str, tgt: str) -> list[int]:
        if seq2seq:
            return tok(f"translate {src} to {tgt}: {text}")["input_ids"]
        ask = f"Translate the following {src} text to {tgt}:\n{text}\n"
        if chat:
            return encode_prompt(tok, [{"role": "user", "content": ask}])
        return tok(ask)["input_ids"]

    def translate(texts: list[str], src_lang: str, tgt_lang: str) -> list[str]:
        src, tgt = LANGUAGE_NAMES.get(src_lang, src_lang), LANGUAGE_NAMES.get(tgt_lang, tgt_lang)
        ids = [encode(t, src, tgt) for t in texts]
        fits = [seq2seq or limit is None or len(x) + max_new_tokens <= limit for x in ids]
        todo = [i for i, ok in enumerate(fits) if ok]
        out = [""] * len(texts)
        for start in range(0, len(todo), batch_size):
            rows = todo[start:start + batch_size]
            batch = tok.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt").to(target)
            with torch.inference_mode():
                gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                     pad_token_id=tok.pad_token_id)
            if not seq2seq:
                gen = gen[:, batch["input_ids"].shape[1]:]
            for i, seq in zip(rows, gen):
                text = tok.decode(seq, skip_special_tokens=True).strip()
                if not seq2seq and not chat:  # a base LM keeps writing: keep the translation's lines only
                    text = "\n".join(text.splitlines()[:texts[i].count("\n") + 1]).strip()
                out[i] = text
        return out

    return translate
