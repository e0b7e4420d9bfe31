// tailor's web export: chat with the model in this page. Everything is loaded from this folder (no network).
// The steps are those of tailor.models.generation.generate: render the conversation with the model's chat
// template, tokenize without adding special tokens, decode greedily up to and including the tokenizer's eos,
// decode the new tokens skipping special tokens and trim. The ONNX graph carries a KV cache: one prefill run
// over the prompt, then one run per new token. window.tailor exposes generate() for scripts and tests.
import * as ort from "./runtime/ort.wasm.bundle.min.js";
import { Tokenizer } from "./runtime/tokenizers.min.js";
import { Template } from "./runtime/jinja.js";

const $ = (id) => document.getElementById(id);
const fetchJson = async (path) => {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
};
const fetchText = async (path) => {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.text();
};

// A macrotask (not clamped like nested setTimeout), so the page can paint between tokens.
const tick = () => new Promise((resolve) => {
  const ch = new MessageChannel();
  ch.port1.onmessage = () => resolve();
  ch.port2.postMessage(null);
});

async function load() {
  const t0 = performance.now();
  const manifest = await fetchJson("web.json");
  ort.env.logLevel = "error";
  // Only the .wasm file: the bundle carries its own JavaScript glue (a prefix here would make it fetch a .mjs).
  ort.env.wasm.wasmPaths = { wasm: new URL("runtime/ort-wasm-simd-threaded.wasm", import.meta.url).href };
  // Threads need SharedArrayBuffer, which browsers give only to cross-origin isolated pages (COOP/COEP headers).
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const [tokJson, tokConfig, templateText] = await Promise.all([
    fetchJson(manifest.tokenizer), fetchJson(manifest.tokenizer_config), fetchText(manifest.chat_template)]);
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  if (manifest.external_data.length) {
    options.externalData = manifest.external_data.map((p) => ({ path: p.split("/").pop(), data: p }));
  }
  const session = await ort.InferenceSession.create(manifest.graph, options);
  return {
    manifest, session, tokenizer: new Tokenizer(tokJson, tokConfig), template: new Template(templateText),
    loadMs: performance.now() - t0, threads: ort.env.wasm.numThreads,
  };
}

function int64(values, dims) {
  return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

function argmaxLast(logits) {
  const [, n, vocab] = logits.dims;
  const data = logits.data;
  let best = 0, bestValue = -Infinity;
  for (let i = (n - 1) * vocab, j = 0; j < vocab; i++, j++) {
    if (data[i] > bestValue) { bestValue = data[i]; best = j; }  // first maximum, as torch.argmax
  }
  return best;
}

function emptyCache(m) {
  const cache = {};
  for (const c of m.cache) cache[c.name] = new ort.Tensor("float32", new Float32Array(0), [1, c.heads, 0, c.dim]);
  return cache;
}

function encode(rt, messages) {
  const text = rt.template.render({ messages, add_generation_prompt: true, ...rt.manifest.special_tokens });
  return rt.tokenizer.encode(text, { add_special_tokens: false }).ids;
}

async function generate(rt, messages, { maxNewTokens = rt.manifest.max_new_tokens, onToken = null } = {}) {
  const t0 = performance.now();
  const m = rt.manifest;
  const prompt = encode(rt, messages);
  const room = m.max_positions - prompt.length;
  if (room < 1) {
    throw new Error(`the conversation has ${prompt.length} tokens, the model at most ${m.max_positions}: start a new chat`);
  }
  const limit = Math.min(maxNewTokens, room);
  const ids = [];
  let feedIds = prompt, past = 0, cache = emptyCache(m), firstAt = null, lastAt = null, lastTick = t0;
  while (ids.length < limit) {
    const n = feedIds.length;
    const feeds = {
      input_ids: int64(feedIds, [1, n]),
      attention_mask: int64(new Array(past + n).fill(1), [1, past + n]),
      position_ids: int64(Array.from({ length: n }, (_, i) => past + i), [1, n]),
      ...cache,
    };
    const out = await rt.session.run(feeds);
    const next = argmaxLast(out.logits);
    lastAt = performance.now();
    if (firstAt === null) firstAt = lastAt;
    ids.push(next);
    if (m.eos_token_ids.includes(next)) break;
    cache = {};
    for (const c of m.cache) cache[c.name] = out[c.present];
    past += n;
    feedIds = [next];
    if (onToken) onToken(ids);
    if (lastAt - lastTick > 50) { await tick(); lastTick = performance.now(); }
  }
  const text = rt.tokenizer.decode(ids, { skip_special_tokens: true }).trim();
  const decodeMs = lastAt - firstAt;
  return {
    ids, text, promptTokens: prompt.length, ttftMs: firstAt - t0, totalMs: lastAt - t0,
    tokensPerS: ids.length > 1 && decodeMs > 0 ? (ids.length - 1) / (decodeMs / 1000) : null,
  };
}

// ---- the page -------------------------------------------------------------------------------------------
let history = [];

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = `turn ${role}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.appendChild(body);
  $("log").appendChild(div);
  return div;
}

function showStats(div, r) {
  const stats = document.createElement("span");
  stats.className = "stats";
  const speed = r.tokensPerS === null ? "" : ` · ${r.tokensPerS.toFixed(1)} tokens/s`;
  stats.textContent = `first token ${r.ttftMs.toFixed(0)} ms${speed} · ${r.ids.length} tokens`;
  div.appendChild(stats);
  Object.assign(div.dataset, {
    tokenIds: JSON.stringify(r.ids), ttftMs: r.ttftMs.toFixed(2),
    tokensPerS: r.tokensPerS === null ? "" : r.tokensPerS.toFixed(2), done: "1",
  });
}

function fail(e) {
  $("status").textContent = String(e && e.message ? e.message : e);
  $("status").className = "error";
}

async function ask(rt, question) {
  history.push({ role: "user", content: question });
  addTurn("user", question);
  const div = addTurn("assistant", "");
  const body = div.querySelector(".text");
  const max = Math.max(1, parseInt($("max-tokens").value, 10) || rt.manifest.max_new_tokens);
  try {
    const r = await generate(rt, history, {
      maxNewTokens: max, onToken: (ids) => { body.textContent = rt.tokenizer.decode(ids, { skip_special_tokens: true }); },
    });
    body.textContent = r.text;
    showStats(div, r);
    history.push({ role: "assistant", content: r.text });
  } catch (e) {
    history.pop();
    div.dataset.error = String(e.message || e);
    fail(e);
  }
}

async function main() {
  const ready = load();
  window.tailor = { ready, generate: async (messages, options) => generate(await ready, messages, options) };
  let rt;
  try {
    rt = await ready;
  } catch (e) {
    fail(`could not load the model: ${e.message || e}`);
    throw e;
  }
  const m = rt.manifest;
  document.title = `${m.name} · tailor chat`;
  $("title").textContent = `${m.name} (${m.weights}, in your browser)`;
  $("status").textContent = `ready: loaded in ${rt.loadMs.toFixed(0)} ms, onnxruntime-web WebAssembly, ` +
    `${rt.threads} thread${rt.threads === 1 ? "" : "s"}`;
  $("status").dataset.ready = "1";
  $("max-tokens").value = m.max_new_tokens;
  for (const id of ["prompt", "send"]) $(id).disabled = false;
  $("ask").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const question = $("prompt").value.trim();
    if (!question || $("send").disabled) return;
    $("prompt").value = "";
    $("send").disabled = true;
    await ask(rt, question);
    $("send").disabled = false;
    $("prompt").focus();
  });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $("ask").requestSubmit(); }
  });
  $("new-chat").addEventListener("click", () => {
    if ($("send").disabled) return;
    history = [];
    $("log").replaceChildren();
  });
}

main();
