"""eval.json_schema: answers generated constrained to a schema and scored as structured answers."""

import json

import pytest

from tailor.config import EvalConfig
from tailor.errors import TailorError
from tailor.evaluation.generation import structured_scores
from tailor.evaluation.run import run
from tests.conftest import write_jsonl

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["product", "days"],
          "properties": {"product": {"type": "string", "enum": ["laptop", "tent"]},
                         "days": {"type": "integer", "minimum": 0, "maximum": 90}}}


def test_structured_scores():
    ref = '{"product": "tent", "days": 60}'
    assert structured_scores('{"product": "tent", "days": 60}', ref, SCHEMA, 0) == \
        {"json_valid": 1.0, "json_exact_match": 1.0, "json_field_accuracy": 1.0}
    half = structured_scores('{"product": "tent", "days": 30}', ref, SCHEMA, 0)
    assert half["json_valid"] == 1.0 and half["json_field_accuracy"] == 0.5 and half["json_exact_match"] == 0.0
    bad = structured_scores('{"product": "stove", "days": 60}', ref, SCHEMA, 0)
    assert bad["json_valid"] == 0.0 and "schema" in bad["json_error"]
    assert structured_scores('{"product": "te', ref, SCHEMA, 0)["json_error"].startswith("not valid JSON")
    with pytest.raises(TailorError, match="record 3"):
        structured_scores("{}", "sixty days", SCHEMA, 3)


def test_eval_generates_valid_json_and_scores_it(tmp_path, llama_dir):
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": json.dumps(a)}]}
            for q, a in [("Laptop returns?", {"product": "laptop", "days": 30}),
                         ("Tent returns?", {"product": "tent", "days": 60})]]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    cfg = EvalConfig(max_new_tokens=40, json_schema=str(tmp_path / "schema.json"), efficiency=False)
    res = run(llama_dir, [str(data)], cfg)
    assert res.metrics["json_valid"] == 1.0  # a random model: valid only through the constraint
    assert 0.0 <= res.metrics["json_field_accuracy"] <= 1.0 and "json_exact_match" in res.metrics
    assert all(json.loads(e["prediction"])["product"] in ("laptop", "tent") for e in res.examples)
    with pytest.raises(TailorError, match="does not apply to task 'lm'"):
        run(llama_dir, [str(data)], EvalConfig(task="lm", json_schema=str(tmp_path / "schema.json")))
    with pytest.raises(TailorError, match="no JSON-schema file"):
        run(llama_dir, [str(data)], EvalConfig(json_schema=str(tmp_path / "missing.json")))
