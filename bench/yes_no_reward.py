"""A GRPO reward file (grpo.rewards: [{file: bench/yes_no_reward.py}]) for bench_grpo.py's yes/no questions:
1.0 when the completion's first "yes" or "no" matches the reference, 0.0 when it is the other or missing."""

import re


def reward(prompts, completions, references):
    out = []
    for completion, reference in zip(completions, references):
        m = re.search(r"\b(yes|no)\b", completion.lower())
        out.append(float(m is not None and m.group(1) == reference.strip().lower()))
    return out
