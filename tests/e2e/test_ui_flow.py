"""A new user in a real browser: upload a chat file, prepare it, build a toy model, train it while watching the
curve, close the tab and restart the UI mid-training, stop it and resume from its checkpoint, evaluate, chat with it side by side, export it; bad uploads
and paths outside the roots refused on the page. Page times are measured while the job trains."""

import json
import os
import signal
import re
import statistics
import time
import urllib.request

from tailor.training.callbacks import read_metrics

FACTS = [("laptop returns", "Laptops can be returned within 30 days."), ("tent returns", "Tents can be returned within 60 days."),
         ("shipping north", "Shipping north takes 3 to 5 business days."), ("shipping south", "Shipping south takes 2 days."),
         ("store hours", "The Springfield store opens at 9 am."), ("gift cards", "Gift cards never expire."),
         ("price match", "We match prices within 14 days."), ("warranty", "Bikes carry a two year warranty.")]
WORDINGS = ["Tell me about {}.", "What is the rule for {}?", "Question on {}, please.", "Can you explain {}?",
            "I need to know about {}.", "Quick one: {}?"]


def chat_file(path):
    rows = [{"messages": [{"role": "user", "content": w.format(topic)}, {"role": "assistant", "content": answer}]}
            for topic, answer in FACTS for w in WORDINGS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def timed_get(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()
    return time.perf_counter() - t


def wait_points(page, title: str, n: int) -> int:
    page.wait_for_function(f"""() => {{ const c = document.querySelector('.chart[data-title="{title}"]');
        return c && Number(c.dataset.points || 0) >= {n}; }}""")
    return int(page.get_attribute(f'.chart[data-title="{title}"]', "data-points"))



def _reopen_and_restart(ui, page, run_url):
    """Close the tab mid-training and open the run again (still running); then restart the UI: the new process
    re-attaches to the running job."""
    page.close()
    page = page.context.new_page()
    page.goto(run_url)
    assert page.inner_text("#run-status .state") == "running"
    ui.stop()
    ui.start()
    page.goto(run_url)
    assert page.inner_text("#run-status .state") == "running"
    return page

def test_new_user_builds_trains_evaluates_chats_and_ships(ui, page, shots, tmp_path):
    t0 = time.perf_counter()
    phases = {}

    def mark(name):
        phases[name] = round(time.perf_counter() - t0, 1)
    page.goto(ui.url + "/")
    page.wait_for_selector("#machine")
    assert "CPU" in page.inner_text("#machine")
    shots(page, "start")

    # Data: a good upload, a malformed one, a path outside the roots.
    page.goto(ui.url + "/data")
    page.set_input_files("#upload-file", str(chat_file(tmp_path / "support.jsonl")))
    page.wait_for_selector("#sources >> text=support.jsonl")
    assert "chat (48)" in page.inner_text("#sources")
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}\n')
    page.set_input_files("#upload-file", str(bad))
    error = page.wait_for_selector("#upload-result .error")
    assert "invalid JSON" in error.inner_text() and "broken.jsonl:1" in error.inner_text()
    page.fill("#pick-path", "../../../../etc/passwd")
    page.click("#add-form button")
    assert "outside the folders this UI may use" in page.inner_text(".error")
    shots(page, "data-refused")

    mark("data")
    # Model: a toy model from a preset, its tokenizer trained on the uploaded data.
    page.goto(ui.url + "/model")
    page.select_option("#build-form select[name=preset]", "llama-micro")
    page.fill("#build-form input[name=vocab_size]", "400")
    page.click("#build-form button")
    page.wait_for_selector("#current-model", timeout=120_000)
    assert "LlamaForCausalLM" in page.inner_text("#current-model")

    mark("model")
    # Data again: prepared with the model's tokenizer, the loss-bearing tokens highlighted.
    page.goto(ui.url + "/data")
    page.fill("#prepare-form input[name=eval_share]", "0.2")
    page.click("#prepare-form button")
    page.wait_for_selector("pre.sample-text mark", timeout=120_000)
    assert "rows read" in page.inner_text("#data-results") and page.is_visible("#accounting")
    assert "EOS" in page.inner_text("#checks")
    shots(page, "data")

    mark("prepare")
    page.goto(ui.url + "/model")
    page.wait_for_selector("#plan", timeout=120_000)
    assert "lora" in page.inner_text("#plan") and "fits" in page.inner_text("#plan")
    shots(page, "model")

    mark("plan")
    # Train: a bad value is refused beside its field; the recipe YAML is shown; then the run starts.
    page.goto(ui.url + "/train")
    page.fill("[name='train.lr']", "fast")
    page.click("#preview-btn")
    assert "valid number" in page.inner_text("[data-key='train.lr'] .error")
    shots(page, "train-errors")
    values = {"train.lr": "0.003", "train.max_steps": "60", "train.batch_size": "4", "data.max_length": "64",
              "train.logging_steps": "2", "train.eval_steps": "10", "train.save_steps": "10", "adapter.r": "8"}
    for key, value in values.items():
        page.fill(f"[name='{key}']", value)
    page.click("#preview-btn")
    assert "max_steps: 60" in page.inner_text("#recipe-yaml")
    shots(page, "train")
    page.click("#start-btn")
    page.wait_for_url("**/runs/*")
    run_url = page.url
    job_id = run_url.rsplit("/", 1)[1]
    mark("train-started")
    # Page times while the job loads and trains.
    times = {}
    for path in ("/", "/data", "/model", "/train", f"/runs/{job_id}", f"/api/runs/{job_id}/metrics", "/jobs"):
        times[path] = [timed_get(ui.url + path) for _ in range(3)]

    # Once its first checkpoint is sealed (step 10), freeze the training job (its worker's whole process group)
    # while the tab closes and the UI restarts, so "mid-training" holds however fast the machine runs 60 toy steps;
    # then stop it (the stop is delivered when the group continues) and resume from that checkpoint below.
    out = ui.workspace / "runs" / "run" / "out"
    end = time.monotonic() + 180
    while not any(out.glob("checkpoint-*/manifest.json")) and time.monotonic() < end:
        time.sleep(0.02)
    worker = json.loads(urllib.request.urlopen(f"{ui.url}/api/jobs/{job_id}").read())
    assert worker["state"] == "running" and worker["pid"], worker
    os.killpg(worker["pid"], signal.SIGSTOP)
    try:
        # The curve moved while it trained: the page shows every loss the frozen job has written (it polls, so it
        # may lag the file by a point or two when the freeze lands), and no more appear while the job is frozen.
        logged = sum(1 for row in read_metrics(out / "metrics.jsonl") if "loss" in row)
        assert logged >= 2, logged
        first = wait_points(page, "loss", logged)
        page = _reopen_and_restart(ui, page, run_url)
        assert wait_points(page, "loss", first) == first  # the same curve after the restart
        shots(page, "run")
        page.click("#run-status form button")  # stop
    finally:
        os.killpg(worker["pid"], signal.SIGCONT)
    page.wait_for_selector("#resume-form", timeout=60_000)
    assert page.inner_text("#run-status .state") == "stopped"
    page.click("#resume-form button")
    page.wait_for_url("**/runs/*")
    job_id = page.url.rsplit("/", 1)[1]
    # The resumed job may wait in the device queue until the stopped worker has exited: wait for its state.
    page.wait_for_function("() => { const s = document.querySelector('#run-status .state');"
                           " return s && ['done', 'failed', 'stopped'].includes(s.innerText.trim()); }",
                           timeout=180_000)
    assert page.inner_text("#run-status .state") == "done"
    page.wait_for_selector("text=Result:", timeout=30_000)
    resumed_steps = [int(n) for n in re.findall(r"step (\d+)/60", page.inner_text("#run-status"))]
    assert resumed_steps and resumed_steps[-1] == 60
    resumed_job = json.loads(urllib.request.urlopen(f"{ui.url}/api/jobs/{job_id}").read())
    assert "train.resume=true" in resumed_job["argv"]
    log = (ui.workspace / "jobs" / job_id / "log.txt").read_text()
    assert int(re.findall(r"step (\d+)/60", log)[0]) > 10  # started from the checkpoint, not from step 0
    losses = json.loads(urllib.request.urlopen(f"{ui.url}/api/runs/{job_id}/metrics").read())["rows"]
    curve = [r["loss"] for r in losses if "loss" in r]
    assert curve[-1] < curve[0]  # it learned
    shots(page, "run-done")

    mark("train-done")
    # Evaluate: base vs tuned with confidence intervals; it waits for the device while we chat.
    page.goto(ui.url + "/evaluate")
    page.fill("#compare-form input[name=max_new_tokens]", "12")
    page.click("#compare-form button")
    page.wait_for_url("**/evaluate/*")
    compare_url = page.url

    # Chat: the tuned adapter and the base model side by side, streamed.
    page.goto(ui.url + "/chat")
    final = page.input_value("#chat-start input[name=model1]")
    assert final.endswith("/final")
    page.fill("#chat-start input[name=model2]", final.rsplit("/runs/", 1)[0] + "/models/llama-micro-1/model")
    page.click("#chat-start button")
    page.wait_for_function("document.querySelectorAll('.chat[data-ready]').length == 2", timeout=120_000)
    page.fill("#chat-text", "Tell me about shipping south.")
    page.click("#chat-send")
    page.wait_for_function("document.querySelectorAll('.msg.assistant[data-done]').length == 2", timeout=60_000)
    answers = page.locator(".msg.assistant").all_inner_texts()
    assert all(a.strip() for a in answers)
    shots(page, "chat")
    mark("chat")

    # Ship: export to safetensors with the before/after table (queued behind the comparison), then download.
    page.goto(ui.url + "/ship")
    page.fill("#export-form input[name=max_examples]", "4")
    page.select_option("#export-form select[name=format]", "safetensors")
    page.click("#export-form button")
    page.goto(compare_url)
    page.wait_for_selector("#compare-table", timeout=180_000)
    assert "token_f1" in page.inner_text("#compare-table") and page.is_visible("#worst")
    shots(page, "compare")
    mark("compare")
    page.goto(ui.url + "/ship")
    page.wait_for_selector(".before-after", timeout=180_000)
    assert "perplexity" in page.inner_text(".before-after")
    page.click(".shipped details summary")
    link = page.locator(".shipped a", has_text="model.safetensors")
    r = page.request.get(ui.url + link.get_attribute("href"))
    assert r.ok and len(r.body()) > 1000
    shots(page, "ship")
    mark("ship")
    page.goto(ui.url + "/jobs")
    shots(page, "jobs")

    summary = {path: {"median_ms": round(1000 * statistics.median(ts), 1), "max_ms": round(1000 * max(ts), 1)}
               for path, ts in times.items()}
    shots.save_json("page-times.json", {"during": "training (60 LoRA steps, llama-micro, nice 10)", "pages": summary,
                                        "flow_seconds": round(time.perf_counter() - t0, 1),
                                        "phases_seconds_since_start": phases})
    print("phases:", phases)
    print("page times while training:", json.dumps(summary))  # reported, not asserted: timings belong in reports
