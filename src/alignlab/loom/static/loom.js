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
};

const $ = (id) => document.getElementById(id);

function annotator() { return $("annotator").value.trim() || "anonymous"; }

async function api(path, options = {}) {
  const headers = {"X-Annotator": annotator(), ...(options.body ? {"Content-Type": "application/json"} : {})};
  const response = await fetch("/api" + path, {...options, headers: {...headers, ...(options.headers || {})}});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    status(`${response.status}: ${detail}`, true);
    throw new Error(detail);
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
  await select(nodeId && state.nodes.has(nodeId) ? nodeId : (state.current && state.nodes.has(state.current) ? state.current : state.tree.tree.root_id));
}

function children(id, archived = false) {
  return (state.kids.get(id) || []).filter((k) => archived || !state.nodes.get(k).archived);
}

async function select(id) {
  state.current = id;
  const node = state.nodes.get(id);
  if (node && node.parent_id) state.lastChild.set(node.parent_id, id);
  location.hash = `tree=${state.tree.tree.id}&node=${id}`;
  renderTree();
  await renderReader();
}

// --- views ------------------------------------------------------------------------------------

function renderTree() {
  const root = state.tree.tree.root_id;
  const outline = el("ul", {class: "outline"});
  const walk = (id, into, depth) => {
    const n = state.nodes.get(id);
    const kids = children(id);
    const label = el("span", {class: `label src-${n.source}` + (id === state.current ? " current" : "") + (n.bookmarked ? " bookmarked" : ""),
                              dataset: {id}, onclick: () => select(id)},
                     (n.text.trim().slice(0, 40) || "(empty)") + (kids.length ? ` [${kids.length}]` : ""));
    const item = el("li", {}, label);
    into.append(item);
    if (kids.length && depth < 60) {
      const sub = el("ul");
      item.append(sub);
      for (const k of kids) walk(k, sub, depth + 1);
    }
  };
  walk(root, outline, 0);
  $("tree-view").replaceChildren(outline);
}

function shade(logprob) {
  // probability 1 -> no shade; improbable tokens get a warmer background
  const p = Math.exp(logprob);
  const alpha = Math.min(0.6, (1 - p) * 0.6);
  return `rgba(255, 140, 0, ${alpha.toFixed(3)})`;
}

async function renderReader() {
  const path = await getJSON(`/nodes/${state.current}/path`);
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
  $("pressure").textContent = `selection ${last.selection_total.toFixed(1)} bits · intervention ${last.intervention_total.toFixed(1)} bits along this path (this node: ${last.selection_bits.toFixed(1)} / ${last.intervention_bits.toFixed(1)})`;
  renderChildren();
}

function renderChildren() {
  const box = $("children");
  const kids = children(state.current);
  box.replaceChildren(...kids.map((id, i) => {
    const n = state.nodes.get(id);
    const model = state.models.find((m) => m.name === n.model);
    const tick = el("input", {type: "checkbox", "aria-label": "select for comparison", dataset: {id}});
    tick.checked = state.compare.includes(id);
    tick.addEventListener("change", () => toggleCompare(id, tick.checked));
    const text = el("div", {class: "child-text", onclick: () => openChild(id)}, n.text || "(empty)");
    const card = el("div", {class: `child src-${n.source}`, dataset: {id}}, el("span", {class: "rank"}, `${i + 1}`), tick, text);
    if (model) card.style.borderLeftColor = model.colour;
    return card;
  }));
  renderCompare();
}

async function openChild(id) {
  await send("POST", `/nodes/${id}/continue`);
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
  popup.replaceChildren(el("div", {}, `token ${JSON.stringify(token.text)} p=${(100 * Math.exp(token.logprob)).toFixed(1)}% · branch from:`), ...rows);
  popup.hidden = false;
}

async function nextTokens() {
  const view = await getJSON(`/nodes/${state.current}/next-tokens?breadth=5&depth=2`);
  const box = $("multiverse");
  const block = (items) => el("ul", {}, ...items.map((t) => el("li", {},
    el("span", {class: "block", title: `${(100 * t.probability).toFixed(2)}%`}, `${JSON.stringify(t.text)} ${(100 * t.probability).toFixed(1)}%`),
    t.children.length ? block(t.children) : "")));
  box.replaceChildren(block(view));
  box.hidden = false;
}

// --- generation ---------------------------------------------------------------------------------

async function generate() {
  const body = {n: +$("gen-n").value, max_tokens: +$("gen-max").value, temperature: +$("gen-temp").value,
                top_p: +$("gen-top-p").value};
  if ($("gen-seed").value !== "") body.seed = +$("gen-seed").value;
  if ($("model-select").value) body.model = $("model-select").value;
  if ($("steer-on").checked) body.steering = {positive: $("steer-pos").value, negative: $("steer-neg").value,
                                              layer: +$("steer-layer").value, coefficient: +$("steer-coef").value};
  const response = await api(`/nodes/${state.current}/generate`, {method: "POST", body: JSON.stringify(body)});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const live = Array.from({length: body.n}, () => el("div", {class: "child streaming"}));
  $("children").append(...live);
  let buffer = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const event = JSON.parse(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 1);
      if (event.type === "queued") status(`queued: position ${event.position}`);
      else if (event.type === "start") status("generating…");
      else if (event.type === "token") live[event.row].append(document.createTextNode(event.token.text));
      else if (event.type === "error") status(event.message, true);
      else if (event.type === "done") { status(`${event.nodes.length} continuations`); await openTree(state.tree.tree.id, state.current); }
    }
  }
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

async function saveEditor(asSibling) {
  const text = $("editor-text").value;
  const mode = $("editor").dataset.mode;
  let made;
  if (mode === "write") made = await send("POST", `/nodes/${state.current}/children`, {text});
  else if (asSibling) made = await send("POST", `/nodes/${state.current}/sibling`, {text});
  else made = await send("PATCH", `/nodes/${state.current}`, {text});
  $("editor").hidden = true;
  await openTree(state.tree.tree.id, made.id);
}

// --- feedback -----------------------------------------------------------------------------------

async function feedback(kind, payload, nodeId = state.current) {
  await send("POST", `/trees/${state.tree.tree.id}/feedback`, {kind, node_id: nodeId, payload});
  status(`recorded ${kind}`);
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
  const choose = (choice) => async () => {
    await feedback("compare", {a: a.id, b: b.id, choice, strength: +$("strength").value / 100});
    state.compare = [];
    renderChildren();
  };
  box.replaceChildren(
    el("div", {class: "side"}, el("div", {class: "compare-text"}, a.text), el("button", {id: "prefer-a", onclick: choose("a")}, "A is better")),
    el("div", {class: "side"}, el("div", {class: "compare-text"}, b.text), el("button", {id: "prefer-b", onclick: choose("b")}, "B is better")),
    el("div", {}, el("label", {}, "strength ", el("input", {id: "strength", type: "range", min: "0", max: "100", value: "100"})),
       el("button", {id: "tie", onclick: choose("tie")}, "Tie"), el("button", {id: "cant-tell", onclick: choose("cant_tell")}, "Can't tell")));
  box.hidden = false;
}

async function rankChildren() {
  const order = children(state.current);
  if (order.length >= 2) await feedback("rank", {order});
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
  const actions = {g: generate, i: () => openEditor("write"), e: () => openEditor("edit"), p: nextTokens,
                   b: () => toggleFlag("bookmark"), x: () => toggleFlag("archive"),
                   "+": () => feedback("thumb", {value: "up"}), "-": () => feedback("thumb", {value: "down"}),
                   "/": () => $("search").focus()};
  if (actions[ev.key]) { ev.preventDefault(); await actions[ev.key](); }
});

async function toggleFlag(flag) {
  const node = state.nodes.get(state.current);
  const value = flag === "bookmark" ? !node.bookmarked : !node.archived;
  await send("POST", `/nodes/${state.current}/${flag}`, {value});
  await openTree(state.tree.tree.id, flag === "archive" && value ? node.parent_id : state.current);
}

async function search(query) {
  const hits = await getJSON(`/trees/${state.tree.tree.id}/search?q=${encodeURIComponent(query)}`);
  if (hits.length) await select(hits[0].id);
  status(`${hits.length} nodes match`);
}

// --- start ----------------------------------------------------------------------------------------

async function start() {
  $("annotator").value = localStorage.getItem("loom-annotator") || "";
  $("annotator").addEventListener("change", () => localStorage.setItem("loom-annotator", annotator()));
  state.models = await getJSON("/models");
  $("model-select").replaceChildren(...state.models.filter((m) => m.kind !== "reward").map((m) => el("option", {value: m.name}, m.name)));
  $("tree-select").addEventListener("change", (ev) => openTree(ev.target.value));
  $("new-tree").addEventListener("click", async () => {
    const prompt = window.prompt("Prompt for the new tree:");
    if (prompt === null) return;
    const tree = await send("POST", "/trees", {prompt});
    await loadTrees(tree.id);
  });
  $("generate").addEventListener("click", generate);
  $("write").addEventListener("click", () => openEditor("write"));
  $("edit").addEventListener("click", () => openEditor("edit"));
  $("editor-save").addEventListener("click", () => saveEditor(false));
  $("editor-sibling").addEventListener("click", () => saveEditor(true));
  $("editor-cancel").addEventListener("click", () => { $("editor").hidden = true; });
  $("next-tokens").addEventListener("click", nextTokens);
  $("steer-toggle").addEventListener("click", () => { $("steering").hidden = !$("steering").hidden; });
  $("thumb-up").addEventListener("click", () => feedback("thumb", {value: "up"}));
  $("thumb-down").addEventListener("click", () => feedback("thumb", {value: "down"}));
  $("rate").addEventListener("click", () => feedback("rating", {value: +$("rating").value, scale_min: 1, scale_max: 7}));
  $("bookmark").addEventListener("click", () => toggleFlag("bookmark"));
  $("archive").addEventListener("click", () => toggleFlag("archive"));
  $("add-tag").addEventListener("click", async () => { await send("POST", `/nodes/${state.current}/tags`, {tag: $("tag").value}); await openTree(state.tree.tree.id, state.current); });
  $("send-critique").addEventListener("click", () => feedback("critique", {text: $("critique").value}));
  $("search").addEventListener("keydown", (ev) => { if (ev.key === "Enter") search(ev.target.value); });
  document.addEventListener("click", (ev) => { if (!$("token-popup").contains(ev.target)) $("token-popup").hidden = true; });
  const hash = new URLSearchParams(location.hash.slice(1));
  await loadTrees(hash.get("tree"));
  if (hash.get("node") && state.nodes.has(hash.get("node"))) await select(hash.get("node"));
}

window.loom = {state, select, navigate, feedback, rankChildren};
start().catch((err) => status(String(err), true));
