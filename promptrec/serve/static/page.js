// The chat page: plain DOM, no build step. Everything from records or the model is set as
// textContent, never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { user: null, conversation: null, item: null, busy: false };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function detailText(body) {
  if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return String(body.detail || "request failed");
}

async function postJSON(url, body) {
  const resp = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (!resp.ok) throw new Error(`${resp.status}: ${detailText(data)}`);
  return data;
}

// POST, then read the server-sent events of the answer: on(event, data) for each.
async function streamPost(url, body, on) {
  const resp = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" }, body: JSON.stringify(body),
  });
  if (!resp.ok) {
    const data = await resp.json().catch(() => ({ detail: resp.statusText }));
    throw new Error(`${resp.status}: ${detailText(data)}`);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) on(event, JSON.parse(data));
    }
  }
}

function setStatus(text) { $("status").textContent = text || ""; }

function setBusy(busy) {
  state.busy = busy;
  document.body.dataset.busy = busy ? "1" : "0";
  for (const b of document.querySelectorAll("button")) b.disabled = busy;
}

async function loadStatus() {
  try {
    const health = await (await fetch("/health")).json();
    const m = health.model;
    let text = `${m.model_id || m.generator} (${m.backend}${m.dtype ? ", " + m.dtype : ""})`;
    if (health.calibration) text += health.calibration.fitted ? ", calibrated" : ", not calibrated";
    $("model").textContent = text;
  } catch (e) { $("model").textContent = "status unavailable"; }
  const users = await (await fetch("/users?limit=1000")).json();
  for (const u of users.users) $("users").appendChild(el("option", null, null)).value = u;
  if (!$("user").value && users.users.length) $("user").value = users.users[0];
}

async function recommend(ev) {
  ev.preventDefault();
  if (state.busy) return;
  const user = $("user").value.trim();
  setBusy(true);
  setStatus("ranking…");
  try {
    const recs = await postJSON("/recommend", { user_id: user, k: Number($("k").value) || 10 });
    state.user = user; state.conversation = null; state.item = null;
    $("turns").replaceChildren(); $("chat").hidden = true;
    renderRecommendations(recs);
    setStatus(`${recs.recommendations.length} items in ${recs.latency_s.toFixed(1)} s`);
  } catch (e) {
    setStatus(e.message);
  } finally { setBusy(false); }
}

function renderRecommendations(recs) {
  const body = $("recs").querySelector("tbody");
  body.replaceChildren();
  let note = `${recs.model_id}, template ${recs.template} (${recs.strategy})`;
  note += recs.calibrated ? "; calibrated P(relevant)" : "; no calibration fitted: ordered by LLM score";
  if (recs.degraded) note += `; the LLM failed (${recs.degraded_reason}): retrieval order`;
  if (recs.cold_start) note += "; no history: popular items";
  $("rec-note").textContent = note;
  for (const r of recs.recommendations) {
    itemRow(body, r, el("td", "title", r.title), [
      el("td", "prob", r.probability === null ? "–" : r.probability.toFixed(3)),
      el("td", null, r.llm_score === null ? "–" : r.llm_score.toFixed(2)),
    ]);
  }
}

// One row of the list: rank, title cell, score cells, retrieval rank, a "why?" button.
function itemRow(body, r, titleCell, scoreCells) {
  const row = el("tr");
  row.dataset.item = r.item_id;
  row.append(el("td", null, r.rank), titleCell, ...scoreCells, el("td", null, `#${r.retrieval_rank}`));
  const cell = el("td");
  const button = el("button", "why", "why?");
  button.type = "button";
  button.addEventListener("click", () => why(r.item_id, r.title));
  cell.appendChild(button);
  row.appendChild(cell);
  body.appendChild(row);
  return row;
}

// A request such as "no horror" turns into a new list, each item with its reasons.
async function refineList(ev) {
  ev.preventDefault();
  const request = $("request").value.trim();
  if (!request || state.busy || !state.user) return;
  setBusy(true);
  setStatus("refining…");
  try {
    if (!state.conversation) {
      state.conversation = (await postJSON("/conversations", { user_id: state.user })).conversation_id;
    }
    const refined = await postJSON(`/conversations/${encodeURIComponent(state.conversation)}/refine`,
      { user_id: state.user, request, k: Number($("k").value) || 10 });
    const body = $("recs").querySelector("tbody");
    body.replaceChildren();
    const understood = refined.refinement.understood.join("; ") || "nothing";
    $("rec-note").textContent = `refined (${understood})` + (refined.note ? `; ${refined.note}` : "");
    for (const r of refined.items) {
      const title = el("td", "title", r.title);
      title.appendChild(el("div", "reasons dim", r.reasons.join("; ")));
      itemRow(body, r, title, [el("td", "prob", "–"), el("td", null, "–")]).dataset.refined = "1";
    }
    setStatus(`${refined.items.length} items for “${request}”`);
  } catch (e) {
    setStatus(e.message);
  } finally { setBusy(false); }
}

function renderEvidence(evidence) {
  const box = el("div", "evidence");
  box.appendChild(el("h3", null, `Evidence: ${evidence.item.title}`));
  const list = el("ul");
  for (const r of evidence.related) {
    let text = `${r.title}, ${r.items_ago} items ago`;
    if (r.shared_genres.length) text += `; shares ${r.shared_genres.join(", ")}`;
    list.appendChild(el("li", "related", text));
  }
  for (const s of evidence.shared) list.appendChild(el("li", "shared", `${s.name} ${s.value}: ${s.count} of ${s.history_size} history items`));
  const sc = evidence.scores;
  let scores = sc.in_candidates ? `retrieval rank ${sc.retrieval_rank} of ${sc.pool}` : `not in the top ${sc.pool}`;
  if (sc.recommended_rank !== null && sc.recommended_rank !== undefined) {
    scores += `; ranker rank ${sc.recommended_rank}`;
    if (sc.probability !== null) scores += `, P(relevant) ${sc.probability.toFixed(3)}`;
  }
  list.appendChild(el("li", "scores", scores));
  box.appendChild(list);
  return box;
}

const GROUNDING = {
  ok: "grounded: names only items from the evidence",
  trimmed: "grounded: the model's answer, ended before a sentence that failed the checks",
  regenerated: "grounded, on the second try: the first answer failed the checks",
  fallback: "built from your records: the model's answers did not pass the checks",
  declined: "declined: the question asks for other users' records, the instructions, or a fact the records lack",
};

async function answer(url, body, label) {
  const turn = el("div", "turn");
  turn.appendChild(el("p", "question", label));
  const text = el("p", "answer");
  const meta = el("p", "meta dim");
  turn.append(text, meta);
  $("turns").appendChild(turn);
  $("chat").hidden = false;
  setBusy(true);
  setStatus("answering…");
  try {
    await streamPost(url, body, (event, data) => {
      if (event === "conversation") state.conversation = data.conversation_id;
      else if (event === "evidence") turn.insertBefore(renderEvidence(data), meta.nextSibling);
      else if (event === "delta") {
        text.textContent += data.text;
        turn.dataset.pieces = String(Number(turn.dataset.pieces || 0) + 1);
      }
      else if (event === "done") {
        text.textContent = data.text;
        meta.textContent = `${GROUNDING[data.grounding]}; ${data.model_id}, ${data.latency_s.toFixed(1)} s`;
        turn.dataset.done = data.grounding;
      } else if (event === "error") { meta.textContent = `error ${data.status}: ${data.detail}`; turn.dataset.done = "error"; }
    });
    setStatus("");
  } catch (e) {
    meta.textContent = e.message; turn.dataset.done = "error"; setStatus(e.message);
  } finally { setBusy(false); }
}

function why(itemId, title) {
  if (state.busy) return;
  state.item = itemId;
  $("chat-title").textContent = `Why ${title}?`;
  answer("/why", { user_id: state.user, item_id: itemId, conversation_id: state.conversation }, `why ${title}?`);
}

function followUp(ev) {
  ev.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.busy || !state.conversation) return;
  $("question").value = "";
  answer(`/conversations/${encodeURIComponent(state.conversation)}/ask`, { user_id: state.user, question }, question);
}

$("choose").addEventListener("submit", recommend);
$("follow").addEventListener("submit", followUp);
$("refine").addEventListener("submit", refineList);
loadStatus();
