"""The Label Studio round trip: eval's uncertain rows -> import file + labeling config; an export -> training rows,
kappa across annotators, disagreements to adjudication. Files in Label Studio's documented JSON formats."""

import json
import xml.etree.ElementTree as ET

import pytest
from sklearn.metrics import cohen_kappa_score

from tailor.cli import main
from tailor.data.annotation import fleiss_kappa, import_export, to_tasks
from tailor.errors import TailorError
from tailor.evaluation.classification import uncertain


def _classified(texts):
    return [{"text": t, "label": "refund" if i % 2 else "shipping", "predicted": "refund", "where": f"eval.jsonl:{i + 1}",
             "probabilities": {"refund": 0.5 + i / 100, "shipping": 0.5 - i / 100}, "margin": i / 50}
            for i, t in enumerate(texts)]


def test_uncertain_classification_rows_become_tasks_with_a_matching_config(tmp_path):
    rows = uncertain(_classified(["where is my parcel", "money back please", "refund for the tent"]), 2, "margin")
    (tmp_path / "uncertain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "annotation-export", str(tmp_path / "uncertain.jsonl"), "--out", str(tmp_path / "ls" / "tasks.json")]) == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert [t["data"]["text"] for t in tasks] == ["where is my parcel", "money back please"]
    pred = tasks[0]["predictions"][0]["result"][0]
    assert pred == {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["refund"]}}
    view = ET.fromstring((tmp_path / "ls" / "label_config.xml").read_text())
    choices = view.find("Choices")
    assert view.find("Text").get("name") == "text" and view.find("Text").get("value") == "$text"
    assert (choices.get("name"), choices.get("toName")) == ("label", "text")
    assert [c.get("value") for c in choices] == ["refund", "shipping"]


def test_uncertain_chat_rows_become_editable_answers():
    rows = [{"messages": [{"role": "user", "content": "How long is the laptop return window?"},
                          {"role": "assistant", "content": "45 days."}], "reference": "30 days.", "answer": "30 days"}]
    tasks, config = to_tasks(rows)
    assert tasks[0]["data"]["prompt"] == "User: How long is the laptop return window?"
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"text": ["45 days."]}
    area = ET.fromstring(config).find("TextArea")
    assert (area.get("name"), area.get("toName")) == ("answer", "prompt")
    with pytest.raises(TailorError, match="classification rows .* or all chat rows"):
        to_tasks([{"foo": 1}])


_IDS = iter(range(1, 10_000))


def _ann(who, label=None, text=None, cancelled=False):
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}] if label else \
        [{"from_name": "answer", "to_name": "prompt", "type": "textarea", "value": {"text": [text]}}]
    return {"id": next(_IDS), "completed_by": who, "result": result, "was_cancelled": cancelled,
            "created_at": "2026-12-06T10:00:00.000000Z"}


def test_an_export_with_three_annotators_gives_rows_fleiss_kappa_and_adjudication(tmp_path):
    votes = [["a", "a", "a"], ["a", "a", "b"], ["b", "b", "b"], ["a", "b", "b"]]
    export = [{"id": i + 1, "data": {"text": f"text {i}"}, "annotations": [_ann(p + 1, lab) for p, lab in enumerate(v)]}
              for i, v in enumerate(votes)]
    export[0]["annotations"].append(_ann(4, "b", cancelled=True))  # cancelled: not a vote
    export.append({"id": 9, "data": {"text": "never labeled"}, "annotations": []})
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert main(["data", "annotation-import", str(tmp_path / "export.json"), "--out", str(tmp_path / "back")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "back" / "train.jsonl").read_text().splitlines()]
    adj = [json.loads(x) for x in (tmp_path / "back" / "adjudicate.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "back" / "agreement.json").read_text())
    assert [(r["text"], r["label"], r["annotators"]) for r in rows] == [("text 0", "a", 3), ("text 2", "b", 3)]
    assert [a["task"] for a in adj] == [2, 4] and adj[0]["votes"] == {"1": "a", "2": "a", "3": "b"}
    # by hand: P_i = 1, 1/3, 1, 1/3 -> mean 2/3; p_a = p_b = 1/2 -> P_e = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert summary["fleiss_kappa"] == pytest.approx(1 / 3) and summary["fleiss_raters"] == 3
    assert summary["skipped"] == {"cancelled annotation": 1, "task without annotations": 1}
    assert fleiss_kappa([["x", "x"], ["y", "y"]]) == pytest.approx(1.0)


def test_two_annotators_give_cohens_kappa_and_corrected_answers_become_chat_rows(tmp_path):
    a = ["x", "x", "y", "y", "x", "y", "x", "x"]
    b = ["x", "y", "y", "y", "x", "x", "x", "x"]
    export = [{"id": i, "data": {"text": f"t{i}"}, "annotations": [_ann({"id": 7, "email": "ann@x.org"}, p), _ann(8, q)]}
              for i, (p, q) in enumerate(zip(a, b))]
    s = import_export(_write(tmp_path / "e1.json", export), tmp_path / "o1")
    assert s["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b)) and s["cohen_items"] == 8
    chat = [{"id": 1, "data": {"prompt": "User: Laptop return window?", "context": [{"role": "user", "content": "Laptop return window?"}]},
             "annotations": [_ann(1, text="30 days."), _ann(2, text=" 30  days. ")]},
            {"id": 2, "data": {"prompt": "User: Tent?", "context": [{"role": "user", "content": "Tent?"}]},
             "annotations": [_ann(1, text="60 days."), _ann(2, text="90 days.")]}]
    s = import_export(_write(tmp_path / "e2.json", chat), tmp_path / "o2")
    rows = [json.loads(x) for x in (tmp_path / "o2" / "train.jsonl").read_text().splitlines()]
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "30 days."} and s["adjudicate"] == 1
    with pytest.raises(TailorError, match="list of tasks"):
        import_export(_write(tmp_path / "e3.json", {"not": "a list"}), tmp_path / "o3")


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path
