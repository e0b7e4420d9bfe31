"""GRPO's built-in rewards and the checks around every reward (a failure is an error naming it, never a zero)."""

import pytest

from tailor.config import RewardSpec
from tailor.errors import TailorError
from tailor.training.rewards import builtin_reward, file_reward, language, needs_reference, numbers


def score(name, completions, references=None, prompts=None, **options):
    fn = builtin_reward(RewardSpec(name=name, options=options))
    prompts = prompts or ["q"] * len(completions)
    return fn(prompts, completions, reference=references)


def test_reference_matches():
    assert score("exact", ["Paris", " Paris ", "paris"], ["Paris"] * 3) == [1.0, 1.0, 0.0]
    assert score("normalized", ["paris!", "Paris, France"], ["Paris"] * 2) == [1.0, 0.0]
    assert score("contains", ["It is Paris, France.", "Lyon"], ["paris"] * 2) == [1.0, 0.0]
    # the answer after the <think> block is what counts
    assert score("exact", ["<think>Lyon? no</think>Paris", "<think>Paris</think>Lyon"], ["Paris"] * 2) == [1.0, 0.0]


def test_numeric_uses_the_last_number_with_a_tolerance():
    refs = ["The total is 1,234.50 yuan"] * 4
    got = score("numeric", ["3 items: 1234.5", "1234.49", "1234.4", "no idea"], refs, tolerance=0.02)
    assert got == [1.0, 1.0, 0.0, 0.0]
    assert score("numeric", ["105"], ["100"], tolerance=0.05, relative=True) == [1.0]
    assert numbers("-3 and 2,000.5") == [-3.0, 2000.5]


def test_format_length_and_language():
    assert score("format", ["<think>add</think>7", "7", "<think>add</think>", "<think></think>7"]) == [1.0, 0, 0, 0]
    assert score("length", ["one two three four", "one", ""], target=4) == [1.0, 0.25, 0.0]
    assert score("language", ["答案是七", "seven", "答案 is 7"], prompts=["三加四是多少？"] * 3) == [1.0, 0.0, 1.0]
    assert score("language", ["seven"], prompts=["3 + 4?"], language="zh") == [0.0]
    assert language("12345") is None


def test_a_row_without_reference_is_an_error_not_a_zero():
    with pytest.raises(TailorError, match="reward 'numeric' raised ValueError: a completion's row has no reference"):
        score("numeric", ["7"], [None])
    with pytest.raises(TailorError, match="holds no number"):
        score("numeric", ["7"], ["seven"])
    assert needs_reference([RewardSpec(name="format"), RewardSpec(name="contains")])
    assert not needs_reference([RewardSpec(name="format"), RewardSpec(name="length")])


def test_file_rewards_run_the_users_function_and_are_checked(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("def reward(prompts, completions, references, scale=1):\n"
                    "    return [scale * float(c == r) if r else None for c, r in zip(completions, references)]\n")
    fn = file_reward(RewardSpec(file=str(good), options={"scale": 2}))
    assert fn.__name__ == "good.reward"
    assert fn(["q", "q"], ["7", "8"], reference=["7", None]) == [2.0, None]  # None: does not apply
    for body, message in (("return [float('nan')] * len(completions)", "returned nan"),
                          ("return [1.0]", "returned 1 values for 2 completions"),
                          ("return ['1'] * len(completions)", "returned '1'"),
                          ("raise RuntimeError('boom')", "raised RuntimeError: boom")):
        bad = tmp_path / "bad.py"
        bad.write_text(f"def reward(prompts, completions, references):\n    {body}\n")
        with pytest.raises(TailorError, match=message):
            file_reward(RewardSpec(file=str(bad)))(["q", "q"], ["7", "8"], reference=["7", "8"])
    with pytest.raises(TailorError, match="defines no function 'score'"):
        file_reward(RewardSpec(file=str(good), function="score"))
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(TailorError, match="importing the reward file failed: ModuleNotFoundError"):
        file_reward(RewardSpec(file=str(broken)))


def test_a_reward_names_one_source():
    with pytest.raises(ValueError, match="exactly one of"):
        RewardSpec(name="exact", file="r.py")
    with pytest.raises(ValueError, match="exactly one of"):
        RewardSpec()
