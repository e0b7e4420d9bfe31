"""Triton python-backend model (copied as model.py by `tailor export --format triton`): tokenize, detokenize, generate.

Standalone: Triton's python backend loads it without tailor, so it imports only numpy, transformers (the
tokenizer) and `triton_python_backend_utils`. One file serves three models of the repository, told apart by
the `role` parameter of their config.pbtxt:

- preprocess: TEXT (one string per row) -> input_ids, attention_mask, position_ids and empty past_key_values.*,
  left-padded, the tensors the ONNX model takes;
- postprocess: logits -> NEXT_TOKEN_ID and NEXT_TOKEN (greedy choice at the last position, decoded);
- generate: TEXT (+ optional MAX_TOKENS) -> GENERATED, greedy decoding with the KV cache, calling the ONNX model
  once per token through BLS (pb_utils.InferenceRequest), as Triton documents for loops an ensemble cannot hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, attention_mask and position_ids of left-padded rows (positions count from each row's first token)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask, np.clip(mask.cumsum(-1) - 1, 0, None)


class TritonPythonModel:
    """The python backend's entry point: initialize once, execute per batch of requests."""

    def initialize(self, args):
        from transformers import AutoTokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.role = params["role"]
        here = Path(args["model_repository"]) / str(args["model_version"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(here / "tokenizer"), local_files_only=True)
        self.chat = params.get("chat_template") == "true"
        self.pad_id = int(params["pad_token_id"])
        self.eos = set(json.loads(params["eos_token_ids"]))
        self.past = json.loads(params["past_shapes"])  # past_key_values.{i}.{key|value} -> [heads, dim]
        self.onnx_model = params.get("onnx_model")
        self.max_tokens = int(params.get("max_tokens", "64"))

    def execute(self, requests):
        run = {"preprocess": self._preprocess, "postprocess": self._postprocess, "generate": self._generate}[self.role]
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=run(request)))
            except Exception as e:  # noqa: BLE001 - one bad request answers with its error, the batch goes on
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{type(e).__name__}: {e}")))
        return responses

    def finalize(self):
        self.tokenizer = None

    def _texts(self, request) -> list[str]:
        rows = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
        return [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in rows]

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text: a user message through the chat template when the export kept one, else as is."""
        if self.chat:
            return [list(self.tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                            tokenize=True, return_dict=False)) for t in texts]
        return [self.tokenizer(t).input_ids for t in texts]

    def _feeds(self, rows: list[list[int]]) -> dict[str, np.ndarray]:
        ids, mask, pos = left_pad(rows, self.pad_id)
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        for name, (heads, dim) in self.past.items():
            feeds[name] = np.zeros((len(rows), heads, 0, dim), dtype=np.float32)
        return feeds

    def _preprocess(self, request):
        return [pb_utils.Tensor(n, a) for n, a in self._feeds(self.encode(self._texts(request))).items()]

    def _postprocess(self, request):
        logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
        nxt = logits[:, -1, :].argmax(-1).astype(np.int64)
        words = np.array([[self.tokenizer.decode([int(t)]).encode("utf-8")] for t in nxt], dtype=np.object_)
        return [pb_utils.Tensor("NEXT_TOKEN_ID", nxt[:, None]), pb_utils.Tensor("NEXT_TOKEN", words)]

    def _infer(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """One call of the ONNX model through BLS; its outputs as CPU numpy arrays."""
        kw = {}
        if hasattr(pb_utils, "PreferredMemory"):  # outputs in CPU memory even when the ONNX model runs on a GPU
            kw["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        response = pb_utils.InferenceRequest(model_name=self.onnx_model, requested_output_names=outputs,
                                             inputs=[pb_utils.Tensor(n, a) for n, a in feeds.items()], **kw).exec()
        if response.has_error():
            raise RuntimeError(f"{self.onnx_model}: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in outputs]

    def generate_ids(self, rows: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy continuation of each row, up to and including its first eos (the KV cache goes round BLS)."""
        feeds = self._feeds(rows)
        past = list(self.past)
        outputs = ["logits"] + [n.replace("past_key_values.", "present.") for n in past]
        new: list[list[int]] = [[] for _ in rows]
        done = np.zeros(len(rows), dtype=bool)
        for _ in range(max_tokens):
            logits, *cache = self._infer(feeds, outputs)
            nxt = logits[:, -1, :].argmax(-1)
            for i, t in enumerate(nxt):
                if not done[i]:
                    new[i].append(int(t))
                    done[i] = int(t) in self.eos
            if done.all():
                break
            mask = np.concatenate([feeds["attention_mask"], np.ones((len(rows), 1), dtype=np.int64)], axis=1)
            feeds = {"input_ids": np.where(done, self.pad_id, nxt)[:, None].astype(np.int64), "attention_mask": mask,
                     "position_ids": feeds["position_ids"][:, -1:] + 1, **dict(zip(past, cache))}
        return new

    def _generate(self, request):
        limit = pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS")
        max_tokens = int(limit.as_numpy().reshape(-1)[0]) if limit is not None else self.max_tokens
        if max_tokens < 1:
            raise ValueError(f"MAX_TOKENS must be at least 1, got {max_tokens}")
        out = self.generate_ids(self.encode(self._texts(request)), max_tokens)
        text = [[self.tokenizer.decode(o, skip_special_tokens=True).encode("utf-8")] for o in out]
        return [pb_utils.Tensor("GENERATED", np.array(text, dtype=np.object_))]
