"""The tiny Llama the plan's tests count by hand: vocabulary V, hidden H, intermediate I, L layers, HEADS heads
sharing KV key/value heads, untied head."""

from transformers import LlamaConfig

from tailor.plan import shape_of

V, H, I, L, HEADS, KV = 100, 64, 128, 2, 4, 2
HEAD_DIM, KVD = H // HEADS, KV * (H // HEADS)


def tiny_llama_shape():
    cfg = LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=HEADS,
                      num_key_value_heads=KV, tie_word_embeddings=False)
    return shape_of(cfg, cfg.to_dict(), name="tiny-llama")
