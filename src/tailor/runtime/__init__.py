"""Opt-in speed-ups that replace transformers/peft internals (decode step, routed experts, int8/int4 kernels,
packed attention)."""
