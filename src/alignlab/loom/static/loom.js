// The loom's page. Node text is untrusted: it only ever reaches the page through textContent
// (never innerHTML), and the server's Content-Security-Policy forbids inline scripts.

const state = {
  tree: null,        // {tree, nodes}
  nodes: new Map(),  // id -> node (no tokens)
  kids: new Map(),   // parent id -> [child ids]
  current: null,     // selected node id
  lastChild: new Map(),
  models: [],
  compare: [],
  ask: null,         // Ask me: the question on show ({pair, why, information, uncertainty, ...}) while asking
  askHistory: [],    // the model's uncertainty over open pairs at each question of this tree
};

const $ = (id) => document.getElementById(id);

function annotator() { return $("annotator").value.trim() || "anonymous"; }

// An API error is already shown in the status line (api() below); a handler that does not catch
// it must not leave an uncaught error on the page.
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason && event.reason.shownToPerson) event.preventDefault();
});

async function api(path, options = {}) {
  const headers = {"X-Annotator": annotator(), ...(options.body ? {"Content-Type": "application/json"} : {})};
  const response = await fetch("/api" + path, {...options, headers: {...headers, ...(options.headers || {})}});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    status(`${response.status}: ${detail}`, true);
    const error = new Error(detail);
    error.shownToPerson = true;
    throw error;
  }
  return response;
}
const getJSON = async (path) => (await api(path)).json();
const send = async (method, path, body) => (await api(path, {method, body: body === undefined ? undefined : JSON.stringify(body)})).json();

function status(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// --- loading --------------------------------------------------------------------------------

async function loadTrees(select) {
  const trees = await getJSON("/trees");
  const box = $("tree-select");
  box.replaceChildren(...trees.map((t) => el("option", {value: t.id}, `${t.title} (${t.nodes})`)));
  const chosen = select || new URLSearchParams(location.hash.slice(1)).get("tree") || (trees[0] && trees[0].id);
  if (chosen) { box.value = chosen; await openTree(chosen); }
}

async function openTree(treeId, nodeId) {
  state.tree = await getJSON(`/trees/${treeId}`);
  state.nodes = new Map(state.tree.nodes.map((n) => [n.id, n]));
  state.kids = new Map();
  for (const n of state.tree.nodes) {
    if (!state.kids.has(n.parent_id)) state.kids.set(n.parent_id, []);
    state.kids.get(n.parent_id).push(n.id);
  }
  await loadJudged();
  renderExports();
  renderEvents();
  goLive(treeId);
  await select(nodeId && state.nodes.has(nodeId) ? nodeId : (state.current && state.nodes.has(state.current) ? state.current : state.tree.tree.root_id));
}

// Live shared trees: the server pushes every event written to this tree; others' changes
// reload the tree in place (your selection kept), and the header shows who is on it.
const STRUCTURE = new Set(["write", "generate", "continue", "edit", "split", "merge", "move", "archive", "unarchive",
                           "bookmark", "unbookmark", "tag", "untag", "note", "settings", "import"]);
let liveReload = null;

function goLive(treeId) {
  if (state.live && state.live.tree === treeId && state.live.who === annotator()) return;
  if (state.live) state.live.source.close();
  const source = new EventSource(`/api/trees/${treeId}/live?annotator=${encodeURIComponent(annotator())}`);
  state.live = {tree: treeId, who: annotator(), source};
  source.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "presence") {
      $("presence").textContent = data.annotators.length > 1 ? `on this tree: ${data.annotators.join(", ")}` : "";
      return;
    }
    if (data.author === annotator() || state.tree.tree.id !== treeId) return;  // our own, already shown
    status(`${data.author}: ${data.kind}`);
    if (STRUCTURE.has(data.kind)) {
      clearTimeout(liveReload);  // a burst of events reloads once
      liveReload = setTimeout(() => openTree(treeId, state.current), 300);
    } else {
      loadJudged().then(renderChildren);
      renderEvents();
    }
  };
}

// Your latest thumb, rating and step judgements of each node, shown on it (others' are in the
// feedback log).
async function loadJudged() {
  const events = await getJSON(`/trees/${state.tree.tree.id}/events?kind=thumb&kind=rating&kind=step&annotator=${encodeURIComponent(annotator())}`);
  state.judged = new Map();
  for (const e of events) noteJudged(e);
}

function noteJudged(e) {
  const mark = state.judged.get(e.node_id) || {};
  state.judged.set(e.node_id, mark);
  if (e.kind !== "step") { mark[e.kind] = e.payload.value; return; }
  // Step labels hold for one split of one text (the node's and the text before it, as judged):
  // each such group keeps each step's latest label; the node shows the group judged last.
  const p = e.payload;
  const key = JSON.stringify([p.by, p.seen.prompt, p.seen.text]);
  mark.stepGroups = mark.stepGroups || new Map();
  const group = mark.stepGroups.get(key) || {by: p.by, prompt: p.seen.prompt, text: p.seen.text, total: p.steps, labels: new Map()};
  if (p.label === "clear") group.labels.delete(p.index); else group.labels.set(p.index, p.label);
  mark.stepGroups.set(key, group);
  mark.steps = group;
}

function pathText(id) {
  let text = "";
  for (let n = state.nodes.get(id); n; n = state.nodes.get(n.parent_id)) text = n.text + text;
  return text;
}

// The node's step judgement as one mark: the lowest label among the judged steps (wrong if any
// step is), and how many of its steps are judged; nothing once its text has changed.
function stepsMark(id, steps) {
  const node = state.nodes.get(id);
  if (!steps || !steps.labels.size || !node || node.text !== steps.text || pathText(node.parent_id) !== steps.prompt) return null;
  const wrong = [...steps.labels.values()].includes("wrong");
  return `steps ${wrong ? "✗" : "✓"} ${steps.labels.size}/${steps.total}`;
}

function judgedMark(id) {
  const mark = (state.judged && state.judged.get(id)) || {};
  const parts = [];
  if (mark.thumb) parts.push(mark.thumb === "up" ? "👍" : "👎");
  if (mark.rating !== undefined) parts.push(`★${mark.rating}`);
  const steps = stepsMark(id, mark.steps);
  if (steps) parts.push(steps);
  return parts.length ? el("span", {class: "judged", title: "your latest thumb / rating of this node; steps: the lowest of your judged steps (✗ if any is wrong) and how many of its steps you judged"}, parts.join(" ")) : "";
}

function children(id, archived = false) {
  return (state.kids.get(id) || []).filter((k) => archived || !state.nodes.get(k).archived);
}

async function select(id) {
  if (id !== state.current) $("multiverse").hidden = true;  // its blocks branch from the node it was opened on
  state.current = id;
  markSeen(id);
  const node = state.nodes.get(id);
  if (node && node.parent_id) state.lastChild.set(node.parent_id, id);
  location.hash = `tree=${state.tree.tree.id}&node=${id}`;
  renderTree();
  await renderReader();
  await showSettings();
  $("note").value = node ? node.note : "";
}

// --- views ------------------------------------------------------------------------------------

function seen() {
  const key = `loom-seen-${state.tree.tree.id}`;
  return new Set(JSON.parse(localStorage.getItem(key) || "[]"));
}

function markSeen(id) {
  const key = `loom-seen-${state.tree.tree.id}`;
  const ids = seen();
  ids.add(id);
  localStorage.setItem(key, JSON.stringify([...ids]));
}

// Outline state kept per tree in this browser: collapsed nodes and the hoisted one (the outline
// shows only its subtree).
const viewKey = () => `alignlab-loom-view-${state.tree.tree.id}`;
function outlineView() {
  const v = JSON.parse(localStorage.getItem(viewKey()) || "{}");
  return {collapsed: new Set(v.collapsed || []), hoist: v.hoist && state.nodes.has(v.hoist) ? v.hoist : null};
}
function saveOutlineView(v) {
  localStorage.setItem(viewKey(), JSON.stringify({collapsed: [...v.collapsed], hoist: v.hoist}));
  renderTree();
}
function toggleCollapsed(id) {
  const v = outlineView();
  if (v.collapsed.has(id)) v.collapsed.delete(id); else v.collapsed.add(id);
  saveOutlineView(v);
}
function hoist(id) {
  const v = outlineView();
  v.hoist = id && id !== state.tree.tree.root_id ? id : null;
  saveOutlineView(v);
  status(v.hoist ? "outline hoisted to this node (unhoist to see the whole tree)" : "whole tree");
}

function renderTree() {
  if (!$("graph-view").hasAttribute("hidden")) renderGraph();
  const read = seen();
  const view = outlineView();
  // the selected node is always visible: its ancestors open
  for (let id = state.nodes.get(state.current)?.parent_id; id; id = state.nodes.get(id)?.parent_id) view.collapsed.delete(id);
  const root = view.hoist || state.tree.tree.root_id;
  $("unhoist").hidden = !view.hoist;
  const outline = el("ul", {class: "outline"});
  const walk = (id, into) => {
    const n = state.nodes.get(id);
    const kids = children(id);
    const closed = view.collapsed.has(id);
    const twisty = kids.length
      ? el("button", {class: "twisty", title: closed ? "expand" : "collapse", "aria-expanded": String(!closed),
                      onclick: () => toggleCollapsed(id)}, closed ? "▸" : "▾")
      : el("span", {class: "twisty"}, "");
    const label = el("span", {class: `label src-${n.source}` + (id === state.current ? " current" : "") + (n.bookmarked ? " bookmarked" : "") + (read.has(id) ? "" : " unread"),
                              dataset: {id}, title: n.text.trim().slice(0, 300), onclick: () => select(id)},
                     (n.text.trim().slice(0, 40) || "(empty)") + (kids.length ? ` [${kids.length}]` : ""));
    const item = el("li", {}, twisty, label);
    into.append(item);
    if (kids.length && !closed) {
      const sub = el("ul");
      item.append(sub);
      for (const k of kids) walk(k, sub);
    }
  };
  walk(root, outline);
  $("tree-view").replaceChildren(outline);
}

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = {prompt: "#777", human: "#1a5fb4", mixed: "#6a3d9a", model: "#e08a00"};

function renderGraph() {
  // Layered layout: x by depth, y by the order leaves are met in a depth-first walk.
  const svg = $("graph-view");
  const place = new Map();
  let row = 0;
  const walk = (id, depth) => {
    const kids = children(id);
    if (!kids.length) { place.set(id, [depth, row++]); return; }
    kids.forEach((k) => walk(k, depth + 1));
    const ys = kids.map((k) => place.get(k)[1]);
    place.set(id, [depth, (Math.min(...ys) + Math.max(...ys)) / 2]);
  };
  walk(state.tree.tree.root_id, 0);
  const shapes = [];
  for (const [id, [d, y]] of place) {
    const parent = state.nodes.get(id).parent_id;
    if (parent && place.has(parent)) {
      const [pd, py] = place.get(parent);
      const line = document.createElementNS(SVG, "line");
      Object.entries({x1: 14 + pd * 36, y1: 14 + py * 22, x2: 14 + d * 36, y2: 14 + y * 22, stroke: "#bbb"})
        .forEach(([k, v]) => line.setAttribute(k, v));
      shapes.push(line);
    }
  }
  for (const [id, [d, y]] of place) {
    const n = state.nodes.get(id);
    const dot = document.createElementNS(SVG, "circle");
    Object.entries({cx: 14 + d * 36, cy: 14 + y * 22, r: id === state.current ? 8 : 6, fill: COLOURS[n.source],
                    stroke: n.bookmarked ? "#d4a000" : "white", "stroke-width": 2}).forEach(([k, v]) => dot.setAttribute(k, v));
    dot.dataset.id = id;
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = n.text.slice(0, 120);
    dot.append(tip);
    dot.addEventListener("click", () => select(id));
    shapes.push(dot);
  }
  const depth = Math.max(...[...place.values()].map(([d]) => d));
  svg.setAttribute("width", 28 + depth * 36);
  svg.setAttribute("height", 28 + row * 22);
  svg.replaceChildren(...shapes);
}

function shade(logprob) {
  // probability 1 -> no shade; improbable tokens get a warmer background; unknown (an endpoint
  // that gave no log-probs) -> no shade
  if (logprob === null || logprob === undefined) return "transparent";
  const p = Math.exp(logprob);
  const alpha = Math.min(0.6, (1 - p) * 0.6);
  return `rgba(255, 140, 0, ${alpha.toFixed(3)})`;
}

async function renderReader() {
  const asked = state.current;
  const path = await getJSON(`/nodes/${asked}/path`);
  if (asked !== state.current) return;  // moved on while the path loaded: the newer selection renders its own
  const article = $("read-view");
  const parts = [];
  path.nodes.forEach((n) => {
    const span = el("span", {class: `node src-${n.source}` + (n.id === state.current ? " current" : ""), dataset: {id: n.id},
                             title: `${n.source}${n.model ? " · " + n.model : ""} · ${n.author}`});
    if (n.tokens && n.tokens.length) {
      n.tokens.forEach((t, i) => {
        const tok = el("span", {class: "token", dataset: {node: n.id, index: i}}, t.text);
        tok.style.backgroundColor = shade(t.logprob);
        tok.addEventListener("click", (ev) => showAlternatives(n, i, ev));
        span.append(tok);
      });
    } else {
      span.append(document.createTextNode(n.text));
    }
    span.addEventListener("dblclick", () => select(n.id));
    parts.push(span);
  });
  article.replaceChildren(...parts);
  const last = path.pressure[path.pressure.length - 1];
  const here = path.nodes[path.nodes.length - 1];
  $("judged-here").replaceChildren(judgedMark(here.id));
  renderSteps();
  const notes = [];
  if (here.meta && here.meta.context_dropped) notes.push(`the model read only the end of this path: its first ${here.meta.context_dropped} tokens did not fit its window`);
  if (here.finish_reason === "stop") notes.push("stopped by hand here");
  if (here.finish_reason === "cancelled") notes.push("cancelled: the page that asked for it closed");
  $("pressure").textContent = `selection ${last.selection_total.toFixed(1)} bits · intervention ${last.intervention_total.toFixed(1)} bits along this path (this node: ${last.selection_bits.toFixed(1)} / ${last.intervention_bits.toFixed(1)})` + notes.map((x) => ` · ${x}`).join("");
  renderChildren();
}

function orderedChildren() {
  const kids = children(state.current);
  const order = state.order && state.order.parent === state.current ? state.order.ids.filter((k) => kids.includes(k)) : [];
  return [...order, ...kids.filter((k) => !order.includes(k))];
}

function moveUp(id) {
  const ids = orderedChildren();
  const at = ids.indexOf(id);
  if (at > 0) [ids[at - 1], ids[at]] = [ids[at], ids[at - 1]];
  state.order = {parent: state.current, ids};
  renderChildren();
}

function renderChildren() {
  const box = $("children");
  box.className = $("side-by-side").checked ? "side-by-side" : "";
  const kids = orderedChildren();
  box.replaceChildren(...kids.map((id, i) => {
    const n = state.nodes.get(id);
    const model = state.models.find((m) => m.name === n.model);
    const tick = el("input", {type: "checkbox", "aria-label": "select for comparison", dataset: {id}});
    tick.checked = state.compare.includes(id);
    tick.addEventListener("change", () => toggleCompare(id, tick.checked));
    const text = el("div", {class: "child-text", onclick: () => openChild(id)}, n.text || "(empty)");
    const up = el("button", {class: "up", title: "move up", onclick: () => moveUp(id)}, "▲");
    const card = el("div", {class: `child src-${n.source}`, dataset: {id}}, el("span", {class: "rank"}, `${i + 1}`), up, tick, judgedMark(id), text);
    if (model) card.style.borderLeftColor = model.colour;
    return card;
  }));
  renderCompare();
}

async function openChild(id) {
  // Opening is navigation; continuing (generating or writing below a node) is what records the choice.
  await select(id);
}

// --- counterfactual tokens and the next-token view -------------------------------------------

function showAlternatives(node, index, ev) {
  ev.stopPropagation();
  const token = node.tokens[index];
  const popup = $("token-popup");
  const rows = token.alternatives.map(([id, text, lp]) => {
    const b = el("button", {class: "alt", dataset: {token: id}}, `${JSON.stringify(text)}  ${(100 * Math.exp(lp)).toFixed(1)}%`);
    b.addEventListener("click", async () => {
      popup.hidden = true;
      const made = await send("POST", `/nodes/${node.id}/counterfactual`, {token_index: index, token_id: id});
      await openTree(state.tree.tree.id, made.id);
    });
    return b;
  });
  const p = token.logprob === null || token.logprob === undefined ? "unknown (the endpoint gave no log-probs)"
    : `${(100 * Math.exp(token.logprob)).toFixed(1)}%`;
  const remote = token.id === null;  // an endpoint's token: texts without ids, so no branching from them
  if (remote) rows.forEach((b) => { b.disabled = true; b.title = "an endpoint gives token texts, not ids: write it yourself to branch"; });
  popup.replaceChildren(el("div", {}, `token ${JSON.stringify(token.text)} p=${p}` + (remote ? " · alternatives:" : " · branch from:")), ...rows);
  popup.hidden = false;
}

// The block multiverse: each column is one more token; a block's height is the probability of
// the whole path to it, so the blocks after a token share its height; the grey rest of a column
// is the probability of every path not shown. Clicking a block writes its path as a child.
const MULTIVERSE_HEIGHT = 260;

async function nextTokens() {
  const from = state.current;
  const view = await getJSON(`/nodes/${from}/next-tokens?breadth=5&depth=2`);
  if (state.current !== from) return;  // the person moved on while the model worked
  const column = (items, path, mass) => {
    const shown = items.reduce((sum, t) => sum + t.probability, 0);
    return el("div", {class: "mv-col"}, ...items.map((t) => {
      const text = path + t.text;
      const block = el("button", {class: "block", title: `${JSON.stringify(text)}: ${(100 * t.probability).toFixed(2)}% — click to branch with it`,
                                  style: `height:${Math.max(1, t.probability * MULTIVERSE_HEIGHT)}px`},
        el("span", {class: "mv-text"}, JSON.stringify(t.text)), el("span", {class: "mv-p"}, `${(100 * t.probability).toFixed(1)}%`));
      block.addEventListener("click", async () => {
        const made = await send("POST", `/nodes/${from}/children`, {text});
        await openTree(state.tree.tree.id, made.id);
        watchBits(made);
      });
      return el("div", {class: "mv-row"}, block, t.children.length ? column(t.children, text, t.probability) : "");
    }), el("div", {class: "mv-rest", style: `height:${Math.max(0, (mass - shown) * MULTIVERSE_HEIGHT)}px`,
                   title: `${(100 * (mass - shown)).toFixed(1)}% on other tokens`}));
  };
  const box = $("multiverse");
  box.replaceChildren(el("div", {class: "mv-head"}, "next tokens: block height = probability of the path · click a block to branch with it"),
                      column(view, "", 1));
  box.hidden = false;
}

// --- generation ---------------------------------------------------------------------------------

async function generate() {
  const body = barSettings();
  if ($("model-select").value) body.model = $("model-select").value;
  if ($("steer-on").checked) body.steering = {positive: $("steer-pos").value, negative: $("steer-neg").value,
                                              layer: +$("steer-layer").value, coefficient: +$("steer-coef").value};
  const response = await api(`/nodes/${state.current}/generate`, {method: "POST", body: JSON.stringify(body)});
  await followGeneration(response, body.n, async (event, stopped) => {
    status(`${event.nodes.length} continuations` + (stopped.size ? `, ${stopped.size} stopped` : ""));
    await openTree(state.tree.tree.id, state.current);
  });
}

// Reroll in place: a fresh continuation with the node's own settings replaces it (the old one is
// archived by the server in the same transaction; z brings it back).
async function reroll() {
  const node = state.nodes.get(state.current);
  if (!node || node.parent_id === null || node.source !== "model") {
    status("reroll a continuation a model wrote (edit your own text instead)", true);
    return;
  }
  const response = await api(`/nodes/${node.id}/reroll`, {method: "POST", body: "{}"});
  await followGeneration(response, 1, async (event) => {
    if (!event.nodes.length) { status("reroll stopped before its first token: nothing changed"); return; }
    state.lastArchived = node.id;
    await openTree(state.tree.tree.id, event.nodes[0].id);
    status("rerolled · z brings the old continuation back");
  });
}

// Shows a generation's stream under the node, with a stop button per row and one for all, and
// records an e-stop for each row the person stopped once the nodes are saved.
async function followGeneration(response, rows, finished) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const stopped = new Map();  // row -> [token index, characters] where the person hit stop
  const counts = Array.from({length: rows}, () => [0, 0]);
  let job = null;
  const stopRow = (row, tokens) => job && api(`/generations/${job}/stop`, {method: "POST", body: JSON.stringify(
    row === null ? {} : {row, tokens})}).catch(() => { /* it had ended: the saved text is what was shown */ });
  const live = Array.from({length: rows}, (_, row) => {
    const text = el("span", {class: "stream-text"});
    const stop = el("button", {class: "e-stop", title: "stop here: this continuation should have ended now (it is saved as shown)"}, "■");
    stop.addEventListener("click", () => {
      stopped.set(row, [...counts[row]]); stop.disabled = true; text.classList.add("stopped");
      stopRow(row, counts[row][0]);
    });
    return el("div", {class: "child streaming"}, stop, text);
  });
  const cancel = el("button", {id: "gen-cancel", title: "stop generating: every continuation is saved as far as it got"}, "Stop generating");
  cancel.addEventListener("click", () => { cancel.disabled = true; stopRow(null); });
  $("children").append(cancel, ...live);
  let buffer = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const event = JSON.parse(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 1);
      if (event.type === "queued") { job = event.job || job; status(`queued: position ${event.position}`); }
      else if (event.type === "start") status("generating…");
      else if (event.type === "status") status(event.message);
      else if (event.type === "token") {
        if (!stopped.has(event.row)) live[event.row].querySelector(".stream-text").append(document.createTextNode(event.token.text));
        counts[event.row] = [event.index + 1, counts[event.row][1] + event.token.text.length];
      }
      else if (event.type === "error") status(event.message, true);
      else if (event.type === "done") {
        for (const [row, [index, chars]] of stopped) {  // the node ends where the person stopped it
          const at = event.rows.indexOf(row);
          if (at >= 0) await feedback("stop", {token_index: index, char: chars}, event.nodes[at].id);
        }
        await finished(event, stopped);
      }
    }
  }
}

// --- memory, template and presets -----------------------------------------------------------------

function showContext() {
  const settings = state.tree.tree.settings || {};
  $("memory").value = settings.memory || "";
  $("template").value = settings.template || "{memory}{text}";
}

async function keepContext() {
  const settings = {...(state.tree.tree.settings || {}), memory: $("memory").value, template: $("template").value};
  await send("PATCH", `/trees/${state.tree.tree.id}`, {settings});
  await openTree(state.tree.tree.id, state.current);
  status($("memory").value ? "memory kept for this tree: every generation reads it before the path" : "memory cleared for this tree");
}

const PRESET_FIELDS = {n: "gen-n", max_tokens: "gen-max", temperature: "gen-temp", top_p: "gen-top-p", seed: "gen-seed",
                       stop: "gen-stop"};

async function loadPresets() {
  state.presets = await getJSON("/presets");
  const select = $("preset-select");
  select.replaceChildren(el("option", {value: ""}, "—"),
                         ...state.presets.map((p) => el("option", {value: p.name}, p.builtin ? p.name : `${p.name} (saved)`)));
}

function applyPreset(name) {
  const preset = state.presets.find((p) => p.name === name);
  if (!preset) return;
  for (const [key, value] of Object.entries(preset.settings)) {
    const id = PRESET_FIELDS[key];
    if (!id) continue;
    $(id).value = key === "stop" ? value.map((x) => x.replace(/\n/g, "\\n")).join("|") : value;
    touchBar(id);
  }
  status(`preset ${name}: the bar holds its settings (marked) until reset`);
}

async function savePreset() {
  const name = window.prompt("Name for a preset of the bar's settings:");
  if (!name || !name.trim()) return;
  const body = barSettings();
  const template = (state.tree.tree.settings || {}).template;
  if (template && template !== "{memory}{text}") body.template = template;
  await send("PUT", `/presets/${encodeURIComponent(name.trim())}`, body);
  await loadPresets();
  $("preset-select").value = name.trim();
  status(`preset ${name.trim()} saved`);
}

// --- editing ----------------------------------------------------------------------------------------

function openEditor(mode) {
  const node = state.nodes.get(state.current);
  $("editor").hidden = false;
  $("editor").dataset.mode = mode;
  $("editor-text").value = mode === "edit" ? node.text : "";
  $("editor-sibling").hidden = mode !== "edit";
  $("editor-text").focus();
}

// Written text's intervention bits are computed by the model after the write commits (a person's
// writing never waits for a generation): poll for them and redraw the path's bits when they come.
async function watchBits(made) {
  if (!made || !made.intervention_bits_pending) return;
  for (let tries = 0; tries < 300; tries++) {
    await new Promise((done) => setTimeout(done, 1000));
    const node = await getJSON(`/nodes/${made.id}`).catch(() => null);
    if (!node || node.text !== made.text) return;
    if (node.intervention_bits !== null && node.intervention_bits !== undefined) {
      const known = state.nodes.get(made.id);
      if (known) known.intervention_bits = node.intervention_bits;
      if (state.current === made.id) await renderReader();
      return;
    }
  }
}

async function saveEditor(asSibling) {
  const text = $("editor-text").value;
  const mode = $("editor").dataset.mode;
  let made;
  if (mode === "write") made = await send("POST", `/nodes/${state.current}/children`, {text});
  else if (asSibling) made = await send("POST", `/nodes/${state.current}/sibling`, {text});
  else made = await send("PATCH", `/nodes/${state.current}`, {text});
  $("editor").hidden = true;
  await openTree(state.tree.tree.id, made.id);
  watchBits(made);
}

// --- feedback -----------------------------------------------------------------------------------

async function feedback(kind, payload, nodeId = state.current) {
  const event = await send("POST", `/trees/${state.tree.tree.id}/feedback`, {kind, node_id: nodeId, payload});
  if (kind === "thumb" || kind === "rating" || kind === "step") {
    noteJudged(event);
    renderChildren();
    $("judged-here").replaceChildren(judgedMark(state.current));
  }
  status(`recorded ${kind}`);
  return event;
}

// --- steps: judging a node step by step (process supervision) -----------------------------------

// The server cuts the node (data/steps.py, losslessly) and says how you judged each step of the
// text as it reads now; a judgement is a "step" event like any other. A process reward model, if
// one is chosen, shows its P(right) beside each step.
const STEP_MARKS = {right: "✓", wrong: "✗"};

async function openSteps() {
  state.stepsOpen = true;
  await renderSteps();
}

async function renderSteps() {
  const box = $("steps-panel");
  if (!state.stepsOpen || !state.current) { box.hidden = true; return; }
  const id = state.current;
  const by = $("steps-by").value;
  const view = await getJSON(`/nodes/${id}/steps?by=${encodeURIComponent(by)}`);
  if (state.current !== id || $("steps-by").value !== by) return;  // the person moved on meanwhile
  const rows = view.steps.map((step) => {
    const label = step.label === true ? "right" : step.label === false ? "wrong" : "";
    const judge = (value, text, title) => el("button", {class: `step-${value}`, title, onclick: () => judgeStep(step.index, value)}, text);
    return el("li", {class: `step ${label}`, dataset: {index: step.index, label}},
      el("span", {class: "step-mark", title: label || "not judged"}, STEP_MARKS[label] || "·"),
      el("span", {class: "step-text"}, step.text.replace(/\s+$/, "") || step.text),
      judge("right", "✓", "this step is right"), judge("wrong", "✗", "this step is wrong"),
      judge("clear", "clear", "take your judgement of this step back"),
      el("span", {class: "step-p"}, ""));
  });
  const processModels = state.models.filter((m) => m.kind === "process");
  const prm = el("select", {id: "prm-select", "aria-label": "process reward model"},
    el("option", {value: ""}, "no process reward model"), ...processModels.map((m) => el("option", {value: m.name}, m.name)));
  prm.value = processModels.some((m) => m.name === state.prm) ? state.prm : "";
  prm.addEventListener("change", () => { state.prm = prm.value; renderSteps(); });
  const lowest = view.min === null ? "" : ` · lowest: ${view.min ? "right" : "wrong"}`;
  const head = el("div", {class: "steps-head"},
    el("span", {id: "steps-summary"}, `${view.steps.length} step${view.steps.length === 1 ? "" : "s"} by ${by} · ${view.judged} judged${lowest}`),
    processModels.length ? prm : "",
    el("button", {id: "steps-close", title: "hide the steps", onclick: () => { state.stepsOpen = false; renderSteps(); }}, "close"));
  box.replaceChildren(head, el("ol", {class: "steps"}, ...rows));
  box.hidden = false;
  if (prm.value) scoreSteps(id, by, prm.value, rows);
}

async function scoreSteps(id, by, model, rows) {
  status(`scoring steps with ${model}…`);
  const scores = await getJSON(`/nodes/${id}/step-scores?by=${encodeURIComponent(by)}&model=${encodeURIComponent(model)}`);
  rows.forEach((row, i) => {
    const p = scores.p_right[i];
    row.querySelector(".step-p").textContent = p === null ? "P(right) ? (past the model's length limit)" : `P(right) ${p.toFixed(2)}`;
  });
  status("");
}

async function judgeStep(index, label) {
  await feedback("step", {by: $("steps-by").value, index, label});
  await renderSteps();
}

function toggleCompare(id, on) {
  state.compare = state.compare.filter((x) => x !== id);
  if (on) state.compare.push(id);
  state.compare = state.compare.slice(-2);
  renderChildren();
}

function renderCompare() {
  const box = $("compare");
  if (state.compare.length !== 2) { box.hidden = true; return; }
  const [a, b] = state.compare.map((id) => state.nodes.get(id));
  const asked = state.ask && state.ask.pair && state.ask.pair.a === a.id && state.ask.pair.b === b.id;
  const choose = (choice) => async () => {
    await feedback("compare", {a: a.id, b: b.id, choice, strength: +$("strength").value / 100});
    state.compare = [];
    renderChildren();
    if (asked) await askMe();  // the answer is learnt from before the next question
  };
  box.replaceChildren(
    el("div", {class: "side"}, el("div", {class: "compare-text"}, a.text), el("button", {id: "prefer-a", onclick: choose("a")}, "A is better")),
    el("div", {class: "side"}, el("div", {class: "compare-text"}, b.text), el("button", {id: "prefer-b", onclick: choose("b")}, "B is better")),
    el("div", {}, el("label", {}, "strength ", el("input", {id: "strength", type: "range", min: "0", max: "100", value: "100"})),
       el("button", {id: "tie", onclick: choose("tie")}, "Tie"), el("button", {id: "cant-tell", onclick: choose("cant_tell")}, "Can't tell")));
  if (asked) {
    const trail = state.askHistory.map((u) => u.toFixed(3)).join(" → ");
    box.append(el("div", {id: "ask-why", class: "ask-why"},
      `Asked because ${state.ask.why}. The model's uncertainty over open pairs (nats), question by question: ${trail}. `,
      el("button", {id: "stop-asking", onclick: () => { state.ask = null; state.compare = []; renderChildren(); status("stopped asking"); }}, "Stop asking")));
  }
  box.hidden = false;
}

// Ask me: the server fits a reward head on this tree's comparisons and names the sibling pair
// whose answer would teach it most (loom/ask.py); the person answers it like any comparison.
async function askMe() {
  const model = $("model-select").value;
  status("choosing a question…");
  const q = await getJSON(`/trees/${state.tree.tree.id}/ask` + (model ? `?model=${encodeURIComponent(model)}` : ""));
  if (!q.pair) { state.ask = null; status(q.why); return; }
  if (!state.ask) state.askHistory = [];
  state.ask = q;
  state.askHistory.push(q.uncertainty);
  await select(state.nodes.get(q.pair.a).parent_id);
  state.compare = [q.pair.a, q.pair.b];
  renderChildren();
  status(`asking: ${q.open} open pairs, ${q.answered} answered`);
}

async function rankChildren() {
  const order = orderedChildren();
  if (order.length >= 2) await feedback("rank", {order});
}

// --- export, training, the feedback log -------------------------------------------------------

const EXPORTS = ["pairs", "rankings", "process", "steps", "thumbs", "ratings", "stops", "spans", "critiques", "demonstrations", "edits", "events"];

function renderExports() {
  const tree = state.tree.tree.id;
  const links = EXPORTS.map((k) => el("a", {href: `/api/export/${k}?tree=${tree}`, download: `${k}.jsonl`, class: "export"}, k));
  links.push(el("a", {href: `/api/trees/${tree}/loom.json`, download: `${tree}.json`, class: "export"}, "Loom JSON"));
  $("export-links").replaceChildren(...links);
}

async function train(kind) {
  const data = kind === "prm" ? ["steps"] : ["pairs", "process"];  // a process model learns from judged steps
  const job = await send("POST", "/train", {kind, max_steps: +$("train-steps").value, data,
                                            trees: [state.tree.tree.id]});
  status(`training job ${job.id} started`);
  pollJobs();
}

async function pollJobs() {
  const jobs = await getJSON("/jobs");
  $("jobs").replaceChildren(...jobs.map((j) => el("div", {class: `job ${j.state}`},
    `${j.kind}: ${j.state} ${(100 * j.progress).toFixed(0)}% ${j.message}`)));
  if (jobs.some((j) => j.state === "running")) setTimeout(pollJobs, 2000);
  else await loadModels();
}

async function renderEvents() {
  if (!$("feedback-box").open) return;
  const tree = state.tree.tree.id;
  const who = $("event-annotator").value;
  const events = await getJSON(`/trees/${tree}/events` + (who ? `?annotator=${encodeURIComponent(who)}` : ""));
  const agreement = await getJSON(`/trees/${tree}/agreement`);
  const names = Object.keys(agreement.annotators);
  const current = $("event-annotator").value;
  $("event-annotator").replaceChildren(el("option", {value: ""}, "everyone"), ...names.map((n) => el("option", {value: n}, n)));
  $("event-annotator").value = current;
  $("agreement").textContent = agreement.agreement === null ? "no comparison judged by two annotators yet"
    : `agreement on comparisons: ${(100 * agreement.agreement).toFixed(0)}% over ${agreement.shared_items} shared judgements (kappa ${agreement.kappa.toFixed(2)})`;
  $("event-log").replaceChildren(...events.slice(-200).reverse().map((e) =>
    el("li", {}, `${e.created_at.slice(0, 19)} ${e.author}: ${e.kind} ${e.node_id ? "on " + e.node_id.slice(-6) : ""} ${JSON.stringify(e.payload).slice(0, 80)}`)));
}

const SCORERS = ["reward", "process"];  // models that score text instead of writing it

async function loadModels() {
  state.models = await getJSON("/models");
  const chosen = $("model-select").value;
  $("model-select").replaceChildren(...state.models.filter((m) => !SCORERS.includes(m.kind)).map((m) => {
    const option = el("option", {value: m.name}, m.name);
    option.style.color = m.colour;
    return option;
  }));
  if (chosen) $("model-select").value = chosen;
}

function selectionInNode() {
  // Character offsets of the page's text selection within the selected node's text.
  const sel = window.getSelection();
  const span = document.querySelector(`#read-view .node[data-id="${state.current}"]`);
  if (!sel.rangeCount || !span) return null;
  const range = sel.getRangeAt(0);
  if (!span.contains(range.startContainer) || !span.contains(range.endContainer)) return null;
  const offset = (container, at) => {
    const before = document.createRange();
    before.selectNodeContents(span);
    before.setEnd(container, at);
    return before.toString().length;
  };
  return [offset(range.startContainer, range.startOffset), offset(range.endContainer, range.endOffset)];
}

async function markSpan(label) {
  const at = selectionInNode();
  if (!at || at[1] <= at[0]) { status("select some text of the current node first", true); return; }
  await feedback("highlight", {start: at[0], end: at[1], label});
}

async function split() {
  const at = selectionInNode();
  if (!at) { status("put the text cursor where the node should be cut", true); return; }
  const tail = await send("POST", `/nodes/${state.current}/split`, {at: at[0]});
  await openTree(state.tree.tree.id, tail.id);
}

async function merge() {
  const node = await send("POST", `/nodes/${state.current}/merge`);
  await openTree(state.tree.tree.id, node.id);
}

function barSettings() {
  const body = {n: +$("gen-n").value, max_tokens: +$("gen-max").value, temperature: +$("gen-temp").value,
                top_p: +$("gen-top-p").value};
  if ($("gen-seed").value !== "") body.seed = +$("gen-seed").value;
  const stop = $("gen-stop").value.split("|").map((x) => x.replace(/\\n/g, "\n")).filter((x) => x.length);
  if (stop.length) body.stop = stop;
  return body;
}

async function keepBranchSettings() {
  await send("PUT", `/nodes/${state.current}/settings`, barSettings());
  localStorage.removeItem(barKey());  // now the branch's own settings
  markBar();
  status("settings kept for this branch");
}

// The bar shows the selected node's settings (defaults, the tree's, its branch's), except the
// fields the person changed: those stay as set while they move about the tree (kept per tree in
// this browser, marked, until "reset" or "Keep for this branch").
const BAR = ["gen-n", "gen-max", "gen-temp", "gen-top-p", "gen-seed", "gen-stop"];
const barKey = () => `alignlab-loom-bar-${state.tree.tree.id}`;
const barTouched = () => JSON.parse(localStorage.getItem(barKey()) || "{}");

function touchBar(id) {
  const touched = barTouched();
  touched[id] = $(id).value;
  localStorage.setItem(barKey(), JSON.stringify(touched));
  markBar();
}

function markBar() {
  const touched = barTouched();
  for (const id of BAR) $(id).classList.toggle("touched", id in touched);
  $("bar-reset").hidden = !Object.keys(touched).length;
}

async function resetBar() {
  localStorage.removeItem(barKey());
  await showSettings();
}

async function showSettings() {
  const s = await getJSON(`/nodes/${state.current}/settings`);
  const shown = {"gen-n": s.n, "gen-max": s.max_tokens, "gen-temp": s.temperature, "gen-top-p": s.top_p,
                 "gen-seed": s.seed ?? "", "gen-stop": (s.stop || []).map((x) => x.replace(/\n/g, "\\n")).join("|")};
  const touched = barTouched();
  for (const id of BAR) $(id).value = id in touched ? touched[id] : shown[id];
  markBar();
}

// --- navigation ---------------------------------------------------------------------------------

function parentOf(id) { return state.nodes.get(id).parent_id; }

function navigate(key) {
  const id = state.current;
  const parent = parentOf(id);
  const sibs = parent ? children(parent) : [id];
  const at = sibs.indexOf(id);
  if (key === "parent" && parent) return select(parent);
  if (key === "child") {
    const kids = children(id);
    if (kids.length) return select(state.lastChild.get(id) && kids.includes(state.lastChild.get(id)) ? state.lastChild.get(id) : kids[0]);
  }
  if (key === "next" && at + 1 < sibs.length) return select(sibs[at + 1]);
  if (key === "prev" && at > 0) return select(sibs[at - 1]);
  if (key === "root") return select(state.tree.tree.root_id);
  if (key === "walk") {
    let node = id;
    for (let kids = children(node); kids.length; kids = children(node)) node = kids[Math.floor(Math.random() * kids.length)];
    return select(node);
  }
  if (key === "rewind") {
    let node = parent;
    while (node && children(node).length < 2) node = parentOf(node);
    if (node) return select(node);
  }
  if (key === "bookmark") {
    const marks = state.tree.nodes.filter((n) => n.bookmarked).map((n) => n.id);
    if (marks.length) return select(marks[(marks.indexOf(id) + 1) % marks.length]);
  }
  return null;
}

const KEYS = {ArrowLeft: "parent", h: "parent", ArrowRight: "child", l: "child", ArrowDown: "next", j: "next",
              ArrowUp: "prev", k: "prev", r: "root", t: "walk", u: "rewind", n: "bookmark"};

document.addEventListener("keydown", async (ev) => {
  if (["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (KEYS[ev.key]) { ev.preventDefault(); await navigate(KEYS[ev.key]); return; }
  const actions = {g: generate, R: reroll, i: () => openEditor("write"), e: () => openEditor("edit"), p: nextTokens,
                   b: () => toggleFlag("bookmark"), x: () => toggleFlag("archive"),
                   "+": () => feedback("thumb", {value: "up"}), "-": () => feedback("thumb", {value: "down"}),
                   "/": () => $("search").focus(), z: undoArchive, Escape: () => { cancelMove(); status(""); }};
  if (actions[ev.key]) { ev.preventDefault(); await actions[ev.key](); }
});

async function toggleFlag(flag) {
  const node = state.nodes.get(state.current);
  const value = flag === "bookmark" ? !node.bookmarked : !node.archived;
  await send("POST", `/nodes/${state.current}/${flag}`, {value});
  await openTree(state.tree.tree.id, flag === "archive" && value ? node.parent_id : state.current);
  if (flag === "archive" && value) {
    state.lastArchived = node.id;
    status("archived (hidden, never deleted) · z to undo");
  }
}

async function undoArchive() {
  if (!state.lastArchived) { status("nothing to undo"); return; }
  const id = state.lastArchived;
  state.lastArchived = null;
  await send("POST", `/nodes/${id}/archive`, {value: false});
  await openTree(state.tree.tree.id, id);
  status("archive undone");
}

async function search(query) {
  // a node id (or its last 6+ characters, as the feedback log shows them) goes to that node
  const q = query.trim();
  const byId = q.length >= 6 ? [...state.nodes.keys()].filter((id) => id === q || id.endsWith(q)) : [];
  if (byId.length === 1) { await select(byId[0]); status(`node ${byId[0]}`); return; }
  const hits = await getJSON(`/trees/${state.tree.tree.id}/search?q=${encodeURIComponent(query)}`);
  if (hits.length) await select(hits[0].id);
  status(`${hits.length} nodes match`);
}

// Move: "Move…" picks the selected node; select its new parent and press "Move here".
async function moveNode() {
  if (!state.moving) {
    if (!state.nodes.get(state.current).parent_id) { status("the root cannot move", true); return; }
    state.moving = state.current;
    $("move-node").textContent = "Move here";
    status("now select the new parent and press Move here (Esc: keep it where it is)");
    return;
  }
  const moving = state.moving;
  cancelMove();
  await send("POST", `/nodes/${moving}/move`, {parent_id: state.current});
  await openTree(state.tree.tree.id, moving);
  status("moved");
}

function cancelMove() {
  state.moving = null;
  $("move-node").textContent = "Move…";
}

// --- start ----------------------------------------------------------------------------------------

async function start() {
  $("annotator").value = localStorage.getItem("loom-annotator") || "";
  $("annotator").addEventListener("change", () => localStorage.setItem("loom-annotator", annotator()));
  await loadModels();
  $("tree-select").addEventListener("change", (ev) => openTree(ev.target.value));
  $("add-model").addEventListener("click", async () => {
    const name = window.prompt("Model folder to add (a trained policy, an adapter, a reward model or a process reward model), or gemma-3-270m / tiny:");
    if (!name || !name.trim()) return;
    const added = await send("POST", "/models", {name: name.trim()});
    await loadModels();
    if (!SCORERS.includes(added.kind)) $("model-select").value = added.name;
    if (added.kind === "process") { state.prm = added.name; await renderSteps(); }
    status(`added ${added.kind} model ${added.name}`);
  });
  $("new-tree").addEventListener("click", async () => {
    const prompt = window.prompt("Prompt for the new tree:");
    if (prompt === null) return;
    const tree = await send("POST", "/trees", {prompt});
    await loadTrees(tree.id);
  });
  $("ask-me").addEventListener("click", askMe);
  $("generate").addEventListener("click", generate);
  $("write").addEventListener("click", () => openEditor("write"));
  $("edit").addEventListener("click", () => openEditor("edit"));
  $("editor-save").addEventListener("click", () => saveEditor(false));
  $("editor-sibling").addEventListener("click", () => saveEditor(true));
  $("editor-cancel").addEventListener("click", () => { $("editor").hidden = true; });
  $("next-tokens").addEventListener("click", nextTokens);
  $("steer-toggle").addEventListener("click", () => { $("steering").hidden = !$("steering").hidden; });
  $("reroll").addEventListener("click", reroll);
  $("context-toggle").addEventListener("click", () => { showContext(); $("context-panel").hidden = !$("context-panel").hidden; });
  $("context-save").addEventListener("click", keepContext);
  $("preset-select").addEventListener("change", (ev) => applyPreset(ev.target.value));
  $("preset-save").addEventListener("click", savePreset);
  $("thumb-up").addEventListener("click", () => feedback("thumb", {value: "up"}));
  $("thumb-down").addEventListener("click", () => feedback("thumb", {value: "down"}));
  $("rate").addEventListener("click", () => feedback("rating", {value: +$("rating").value, scale_min: 1, scale_max: 7}));
  $("bookmark").addEventListener("click", () => toggleFlag("bookmark"));
  $("archive").addEventListener("click", () => toggleFlag("archive"));
  $("add-tag").addEventListener("click", async () => { await send("POST", `/nodes/${state.current}/tags`, {tag: $("tag").value}); await openTree(state.tree.tree.id, state.current); });
  $("send-critique").addEventListener("click", async () => {
    await feedback("critique", {text: $("critique").value});
    $("critique").value = "";
  });
  $("search").addEventListener("keydown", (ev) => { if (ev.key === "Enter") search(ev.target.value); });
  $("rank").addEventListener("click", rankChildren);
  $("import-file").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    let doc;
    try { doc = JSON.parse(await file.text()); } catch (err) { status(`${file.name}: not JSON (${err.message})`, true); return; }
    // a Loom tree, a Loomsidian note or data.json, or an Exoloom export: the server tells them apart
    const made = await send("POST", `/import?title=${encodeURIComponent(file.name.replace(/\.json$/, ""))}`, doc);
    await loadTrees(made.trees[0].id);
    status(`imported ${made.trees.length} tree${made.trees.length === 1 ? "" : "s"} from ${file.name}`);
  });
  $("span-good").addEventListener("click", () => markSpan("good"));
  $("span-bad").addEventListener("click", () => markSpan("bad"));
  $("split").addEventListener("click", split);
  $("steps").addEventListener("click", openSteps);
  $("steps-by").addEventListener("change", renderSteps);
  $("merge").addEventListener("click", merge);
  $("branch-settings").addEventListener("click", keepBranchSettings);
  $("bar-reset").addEventListener("click", resetBar);
  $("hoist").addEventListener("click", () => hoist(state.current));
  $("move-node").addEventListener("click", moveNode);
  $("unhoist").addEventListener("click", () => hoist(null));
  for (const id of BAR) $(id).addEventListener("input", () => touchBar(id));
  $("save-note").addEventListener("click", async () => { await send("PUT", `/nodes/${state.current}/note`, {note: $("note").value}); status("note saved"); });
  $("side-by-side").addEventListener("change", renderChildren);
  $("train-reward").addEventListener("click", () => train("reward"));
  $("train-dpo").addEventListener("click", () => train("dpo"));
  $("train-prm").addEventListener("click", () => train("prm"));
  $("feedback-box").addEventListener("toggle", renderEvents);
  $("event-annotator").addEventListener("change", renderEvents);
  // (an <svg> has no .hidden property: the attribute itself is toggled)
  $("show-outline").addEventListener("click", () => { $("graph-view").setAttribute("hidden", ""); $("tree-view").hidden = false; });
  $("show-graph").addEventListener("click", () => { $("graph-view").removeAttribute("hidden"); $("tree-view").hidden = true; renderGraph(); });
  pollJobs();
  await loadPresets();
  document.addEventListener("click", (ev) => { if (!$("token-popup").contains(ev.target)) $("token-popup").hidden = true; });
  window.addEventListener("hashchange", async () => {  // back/forward, or a pasted link
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.get("tree") && (!state.tree || h.get("tree") !== state.tree.tree.id)) await loadTrees(h.get("tree"));
    if (h.get("node") && h.get("node") !== state.current && state.nodes.has(h.get("node"))) await select(h.get("node"));
  });
  const hash = new URLSearchParams(location.hash.slice(1));
  await loadTrees(hash.get("tree"));
  if (hash.get("node") && state.nodes.has(hash.get("node"))) await select(hash.get("node"));
}

window.loom = {state, select, navigate, feedback, rankChildren};
start().catch((err) => status(String(err), true));
