"""The embedded proof of issue 21: teach the quickstart model two store tools, measure before and after.

    python bench/tool_calling_proof.py data    [--out runs/toolproof]
    OMP_NUM_THREADS=1 nice -n 10 python bench/tool_calling_proof.py train   [--out runs/toolproof]
    python bench/tool_calling_proof.py measure [--out runs/toolproof]

data writes tool-calling conversations over the quickstart's store (`tailor.quickstart.store_domain`): an
order-status lookup and a stock check, English and Chinese, as OpenAI-shaped rows (tools, assistant
tool_calls, tool results, the final answer), plus plain store questions with the tools present (the right
choice there is no call). Held-out requests use wordings, order numbers and product/city pairs that the
training rows do not. train runs `tailor train` (LoRA SFT on the merged quickstart model) on them.
measure starts `tailor serve` with the base model and the trained adapter and, through the official
`openai` client, scores every held-out request: tool selection (the right tool, or no call when none is
needed) and arguments (exactly the expected ones), for the base and the adapter, with tool_choice auto
and required (constrained decoding); then it runs full round trips (request -> tool call -> tool result
from the fake store backend -> answer) and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tailor.quickstart.store_domain import CITIES, PRODUCTS  # noqa: E402

BASE = "/work/artifacts/qs14/merged"
PLAIN_QUESTIONS = "/work/artifacts/qs14/data"  # the quickstart's own train/eval questions (no tool needed)
# Short definitions: the quickstart tokenizer was trained on store prose, so JSON costs it many tokens. Product and
# city are the store's keys (summit_tent, denver), learned from the training rows rather than listed as enums.
TOOLS = [
    {"type": "function", "function": {"name": "order_status", "description": "Order status",
     "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "maxLength": 8}},
                    "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "stock_check", "description": "Units in a store",
     "parameters": {"type": "object", "properties": {"product": {"type": "string", "maxLength": 20},
                                                     "city": {"type": "string", "maxLength": 12}},
                    "required": ["product", "city"]}}},
]
ORDER = {"train": {"en": ["Where is my order {id}?", "Has order {id} shipped yet?", "Status of order {id}, please.",
                          "Can you check order {id} for me?"],
                   "zh": ["我的订单{id}到哪里了？", "订单{id}发货了吗？", "帮我查一下订单{id}。", "订单{id}现在是什么状态？"]},
         "heldout": {"en": ["Any news on order {id}?", "I want to track order {id}."],
                     "zh": ["请问订单{id}的物流情况？", "查询订单{id}的进度。"]}}
STOCK = {"train": {"en": ["Is the {product} in stock at the {city} store?", "Do you have the {product} in {city}?",
                          "How many {product} units does {city} have?", "Can I buy the {product} in {city} today?"],
                   "zh": ["{city}店还有{product}吗？", "{product}在{city}有货吗？", "{city}门店{product}还剩几件？",
                          "今天能在{city}买到{product}吗？"]},
         "heldout": {"en": ["Does the {city} shop carry the {product} right now?", "Any {product} left in {city}?"],
                     "zh": ["{city}现在有没有{product}？", "想在{city}买{product}，有库存吗？"]}}
STATUS = [("shipped", "已发货"), ("processing", "正在处理"), ("delivered", "已送达")]


def backend(name: str, args: dict) -> dict:
    """The fake store system the tools reach: deterministic answers from the arguments."""
    if name == "order_status":
        h = sum(map(ord, args["order_id"]))
        return {"order_id": args["order_id"], "status": STATUS[h % 3][0], "eta": f"December {5 + h % 20}"}
    units = (len(args["product"]) * 7 + len(args["city"]) * 3) % 9
    return {"product": args["product"], "city": args["city"], "units": units}


def final_answer(name: str, args: dict, result: dict, lang: str) -> str:
    if name == "order_status":
        zh = dict(STATUS)[result["status"]]
        day = result["eta"].split()[1]
        return (f"Order {args['order_id']} is {result['status']}; expected by {result['eta']}." if lang == "en" else
                f"订单{args['order_id']}{zh}，预计12月{day}日送达。")
    p, c = PRODUCTS[args["product"]], CITIES[args["city"]]
    return (f"The {c[0]} store has {result['units']} {p[0]} in stock." if lang == "en" else
            f"{c[1]}店的{p[1]}还有{result['units']}件。")


def _fill(template: str, lang: str, name: str, args: dict) -> str:
    if name == "order_status":
        return template.format(id=args["order_id"])
    i = 1 if lang == "zh" else 0
    return template.format(product=PRODUCTS[args["product"]][i], city=CITIES[args["city"]][i])


def _requests(split: str, rng: random.Random, per_template: int, used: set) -> list[dict]:
    rows = []
    for name, table in (("order_status", ORDER), ("stock_check", STOCK)):
        for lang, templates in table[split].items():
            for template in templates:
                for _ in range(per_template):
                    while True:
                        args = ({"order_id": f"NW-{rng.randrange(10000, 99999)}"} if name == "order_status" else
                                {"product": rng.choice(sorted(PRODUCTS)), "city": rng.choice(sorted(CITIES))})
                        key = json.dumps(args, sort_keys=True)
                        if key not in used:  # held-out arguments are unique and never appear in training
                            if split == "heldout":
                                used.add(key)
                            break
                    rows.append({"lang": lang, "question": _fill(template, lang, name, args), "tool": name,
                                 "arguments": args})
    return rows


def _conversation(req: dict) -> dict:
    """A training row in OpenAI's shape: the request, the call, the tool's result, the answer."""
    result = backend(req["tool"], req["arguments"])
    call = {"id": "call_1", "type": "function",
            "function": {"name": req["tool"], "arguments": json.dumps(req["arguments"], ensure_ascii=False)}}
    return {"tools": TOOLS, "lang": req["lang"], "messages": [
        {"role": "user", "content": req["question"]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(result, ensure_ascii=False)},
        {"role": "assistant", "content": final_answer(req["tool"], req["arguments"], result, req["lang"])}]}


def _plain(path: Path, n: int, rng: random.Random) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [{"lang": r.get("lang", "en"), "question": r["messages"][0]["content"], "tool": None, "arguments": None,
             "answer": r["messages"][-1]["content"]} for r in rng.sample(rows, n)]


def cmd_data(out: Path) -> None:
    rng, used = random.Random(0), set()
    heldout = _requests("heldout", rng, 5, used) + _plain(Path(PLAIN_QUESTIONS) / "eval.jsonl", 20, rng)
    train_req = _requests("train", rng, 8, used)
    train = [_conversation(r) for r in train_req]
    train += [{"tools": TOOLS, "lang": p["lang"], "messages": [{"role": "user", "content": p["question"]},
                                                              {"role": "assistant", "content": p["answer"]}]}
              for p in _plain(Path(PLAIN_QUESTIONS) / "train.jsonl", 48, rng)]
    rng.shuffle(train)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(train)} training rows ({len(train_req)} with tool calls), {len(heldout)} held-out requests -> {out}")


def cmd_train(out: Path, epochs: int) -> None:
    recipe = {"model": {"path": BASE}, "data": {"train": [str(out / "train.jsonl")], "max_length": 512},
              "adapter": {"method": "lora", "r": 32, "alpha": 64, "dropout": 0.0, "target_modules": "all-linear"},
              "train": {"objective": "sft", "epochs": epochs, "batch_size": 8, "lr": 3.0e-3, "warmup_ratio": 0.05,
                        "scheduler": "cosine", "logging_steps": 5, "save_steps": 10_000,
                        "output_dir": str(out / "sft")}}
    import yaml

    (out / "sft.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "tailor.cli", "train", str(out / "sft.yaml"),
                    f"data.prepared_dir={out / 'prepared'}"], check=True)
    print(f"trained in {time.time() - t0:.0f} s -> {out / 'sft' / 'final'}")


def _score(client, model: str, rows: list[dict], choice: str) -> dict:
    picked = args_ok = invalid = 0
    needing = [r for r in rows if r["tool"]]
    for r in rows:
        if choice == "required" and not r["tool"]:
            continue  # required forces a call: only requests that need one are scored
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": r["question"]}],
                                               tools=TOOLS, tool_choice=choice, temperature=0, max_tokens=96)
        c = reply.choices[0]
        calls = c.message.tool_calls or []
        invalid += c.finish_reason == "invalid_tool_call"
        name = calls[0].function.name if len(calls) == 1 else None
        if name == r["tool"] or (not r["tool"] and not calls and c.finish_reason != "invalid_tool_call"):
            picked += 1
            if r["tool"] and json.loads(calls[0].function.arguments) == r["arguments"]:
                args_ok += 1
    scored = len(needing) if choice == "required" else len(rows)
    return {"selection": picked / scored, "arguments": args_ok / len(needing), "invalid": invalid, "n": scored}


def round_trip(client, model: str, question: str) -> list[str]:
    """request -> tool call -> the backend's result -> the answer, as the official client runs it."""
    messages = [{"role": "user", "content": question}]
    log = [f"user: {question}"]
    for _ in range(3):
        reply = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, temperature=0,
                                               max_tokens=96).choices[0]
        if not reply.message.tool_calls:
            log.append(f"assistant: {reply.message.content}")
            return log
        messages.append(reply.message.model_dump(exclude_none=True))
        for call in reply.message.tool_calls:
            result = backend(call.function.name, json.loads(call.function.arguments))
            log.append(f"tool call: {call.function.name}({call.function.arguments}) -> {json.dumps(result)}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result, ensure_ascii=False)})
    return log


def cmd_measure(out: Path) -> None:
    import httpx
    import openai

    rows = [json.loads(line) for line in (out / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    port = 8765
    log = open(out / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tailor.cli", "serve", BASE, "max_tokens=96", "--model-name", "base",
                             "--port", str(port), "--adapter", f"tools={out / 'sft' / 'final'}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited; see {out / 'serve.log'}")
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
        results = {}
        for model in ("base", "tools"):
            for choice in ("auto", "required"):
                results[f"{model}/{choice}"] = s = _score(client, model, rows, choice)
                print(f"{model:5s} tool_choice={choice:8s}: selection {s['selection']:.1%} (of {s['n']}), "
                      f"arguments {s['arguments']:.1%} (of {sum(1 for r in rows if r['tool'])} needing a tool), "
                      f"invalid calls {s['invalid']}", flush=True)
        trips = {q: round_trip(client, "tools", q) for q in
                 ("Any news on order NW-31415?", "想在丹佛买Summit 4 帐篷，有库存吗？", "How long can I return a laptop?")}
        for lines in trips.values():
            print("\n  ".join(["round trip:", *lines]))
        (out / "results.json").write_text(json.dumps({"scores": results, "round_trips": trips}, ensure_ascii=False,
                                                     indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["data", "train", "measure"])
    ap.add_argument("--out", default="runs/toolproof")
    ap.add_argument("--epochs", type=int, default=12)
    a = ap.parse_args()
    out = Path(a.out).resolve()
    {"data": lambda: cmd_data(out), "train": lambda: cmd_train(out, a.epochs), "measure": lambda: cmd_measure(out)}[a.step]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
