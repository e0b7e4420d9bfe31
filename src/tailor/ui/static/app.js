// tailor ui: the little behaviour the server-rendered pages need (no framework, nothing fetched from elsewhere).
"use strict";

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function showError(box, err) {
  box.replaceChildren();
  const d = el("div", {class: "error", role: "alert"});
  d.append(el("div", {class: "what"}, err.what));
  if (err.where) d.append(el("div", {}, "where: " + err.where));
  if (err.fix) d.append(el("div", {}, "fix: " + err.fix));
  box.append(d);
}

// Upload: the file's bytes in the request body; the server refuses bad files with the CLI's message.
function setupUpload() {
  const input = document.getElementById("upload-file");
  if (!input) return;
  input.addEventListener("change", async () => {
    const box = document.getElementById("upload-result");
    box.replaceChildren(el("div", {class: "hint"}, "uploading…"));
    for (const file of input.files) {
      const r = await fetch("/api/upload?name=" + encodeURIComponent(file.name), {method: "PUT", body: file});
      let body = {};
      try { body = await r.json(); } catch (e) { body = {error: {what: "upload failed (" + r.status + ")"}}; }
      if (!r.ok) { showError(box, body.error || {what: "upload failed"}); input.value = ""; return; }
    }
    location.reload();
  });
}

// File picker confined to the server's roots.
function setupPickers() {
  for (const picker of document.querySelectorAll(".picker")) {
    const target = document.getElementById(picker.dataset.target);
    const show = async (path) => {
      const r = await fetch("/api/browse" + (path ? "?path=" + encodeURIComponent(path) : ""));
      const body = await r.json();
      picker.replaceChildren();
      if (!r.ok) { showError(picker, body.error); return; }
      const list = el("ul", {class: "browse"});
      if (body.path) {
        const here = el("li", {class: "here"}, body.path + " ");
        const use = el("button", {type: "button"}, "use this folder");
        use.onclick = () => { target.value = body.path; };
        here.append(use);
        list.append(here);
      }
      if (body.parent || body.path) {
        const up = el("li", {class: "dir"}, "..");
        up.onclick = () => show(body.parent);
        list.append(up);
      }
      for (const d of body.dirs) {
        const li = el("li", {class: "dir"}, d + "/");
        li.onclick = () => show(body.path ? body.path + "/" + d : d);
        list.append(li);
      }
      for (const f of body.files) {
        const li = el("li", {class: "file"}, f);
        li.onclick = () => { target.value = body.path + "/" + f; };
        list.append(li);
      }
      picker.append(list);
    };
    const open = el("button", {type: "button"}, "browse…");
    open.onclick = () => show(null);
    picker.append(open);
  }
}

// Reload the page when a job it shows has finished (its results are rendered by the server).
function setupReloads() {
  for (const e of document.querySelectorAll("[data-reload-when-done]")) {
    const id = e.dataset.reloadWhenDone;
    const poll = async () => {
      try {
        const r = await fetch("/api/jobs/" + id);
        const job = await r.json();
        if (job.state !== "queued" && job.state !== "running") { location.reload(); return; }
      } catch (err) { /* the UI restarting: try again */ }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }
}

// Live training curves from the run's metrics.jsonl.
const CURVES = [
  ["loss", ["loss", "eval_loss"]], ["learning rate", ["learning_rate"]], ["grad norm", ["grad_norm"]],
  ["tokens/s", ["tokens_per_second"]],
];
const COLORS = ["#2563eb", "#dc2626"];

function setupCharts() {
  const box = document.getElementById("charts");
  if (!box || typeof uPlot === "undefined") return;
  const job = box.dataset.job;
  const series = {};
  let next = 0;
  const charts = [];
  for (const [title, keys] of CURVES) {
    const div = el("div", {class: "chart", "data-title": title});
    box.append(div);
    const opts = {
      title, width: 420, height: 220, scales: {x: {time: false}},
      axes: [{label: "step"}, {}],
      series: [{label: "step"}, ...keys.map((k, i) => ({label: k, stroke: COLORS[i], width: 2, spanGaps: true,
        points: {show: k === "eval_loss"}}))],
    };
    charts.push([keys, new uPlot(opts, [[], ...keys.map(() => [])], div), div]);
  }
  const draw = () => {
    for (const [keys, plot, div] of charts) {
      const steps = new Set();
      for (const k of keys) for (const s of Object.keys(series[k] || {})) steps.add(Number(s));
      const xs = [...steps].sort((a, b) => a - b);
      plot.setData([xs, ...keys.map(k => xs.map(x => (series[k] || {})[x] ?? null))]);
      div.dataset.points = String(xs.length);
    }
    const seen = document.getElementById("steps-seen");
    if (seen) seen.textContent = (series.loss ? Object.keys(series.loss).length : 0) + " logged steps";
  };
  const poll = async () => {
    let state = "running";
    try {
      const r = await fetch("/api/runs/" + job + "/metrics?after=" + next);
      const body = await r.json();
      state = body.state;
      next = body.next;
      for (const row of body.rows) {
        for (const [, keys] of CURVES) for (const k of keys) {
          if (row[k] !== undefined && row.step !== undefined) (series[k] = series[k] || {})[row.step] = row[k];
        }
      }
      draw();
    } catch (err) { /* UI restarting */ }
    if (state === "queued" || state === "running") setTimeout(poll, 1500);
  };
  poll();
}

// Chat: stream each model's answer (server-sent events relayed by the UI from `tailor serve`).
function setupChat() {
  const cards = [...document.querySelectorAll(".chat[data-server]")];
  if (!cards.length) return;
  const history = new Map(cards.map(c => [c, []]));
  for (const card of cards) {
    const poll = async () => {
      const r = await fetch("/api/chat/" + card.dataset.server + "/ready");
      const body = await r.json();
      const st = card.querySelector(".chat-state");
      if (body.ready) { st.textContent = "ready"; card.dataset.ready = "1"; return; }
      if (body.state !== "queued" && body.state !== "running") { st.textContent = "stopped: " + (body.log || body.state); return; }
      setTimeout(poll, 1000);
    };
    poll();
  }
  const form = document.getElementById("chat-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = document.getElementById("chat-text").value.trim();
    if (!text) return;
    const maxTokens = Number(document.getElementById("chat-max").value) || 64;
    for (const card of cards) ask(card, history.get(card), text, maxTokens);
    document.getElementById("chat-text").value = "";
  });
}

async function ask(card, messages, text, maxTokens) {
  const log = card.querySelector(".chat-log");
  messages.push({role: "user", content: text});
  log.append(el("div", {class: "msg user"}, text));
  const answer = el("div", {class: "msg assistant streaming"}, "");
  log.append(answer);
  const r = await fetch("/api/chat/" + card.dataset.server, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({messages, max_tokens: maxTokens}),
  });
  if (!r.ok) { const b = await r.json(); showError(answer, b.error); return; }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "", out = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 2);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") continue;
      const ev = JSON.parse(data);
      if (ev.error) { answer.textContent = "error: " + (ev.error.message || ev.error); continue; }
      const delta = ev.choices && ev.choices[0].delta && ev.choices[0].delta.content;
      if (delta) { out += delta; answer.textContent = out; }
    }
  }
  answer.classList.remove("streaming");
  answer.dataset.done = "1";
  messages.push({role: "assistant", content: out});
}

document.addEventListener("DOMContentLoaded", () => {
  setupUpload(); setupPickers(); setupReloads(); setupCharts(); setupChat();
});
