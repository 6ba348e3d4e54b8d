"""The original Loom's JSON tree format, read and written; Loomsidian's and Exoloom's read.

A Loom file holds ``{"root": NODE, ...}`` where a NODE is ``{"id", "text", "children": [NODE...],
"parent_id", "meta": {"source": ...}, "tags": [...]}`` plus fields of Loom's own (visited, open,
chapter_id, text_attributes, ...). Importing keeps every field alignlab has no column for in the
node's ``meta["loom"]`` and the file's other top-level keys in the tree's ``meta``, and
exporting puts them back, so a file survives import -> export with its text, structure, sources,
tags and extra fields. Loom's sources map to alignlab's: "AI" -> model, "prompt" -> prompt,
"human"/"user" -> human, "mixed" -> mixed; a node without one is taken as model text (most Loom
nodes are) and written back without one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignlab.loom.events import Invalid
from alignlab.loom.export import Tree
from alignlab.loom.store import Store

TO_ALIGNLAB = {"ai": "model", "model": "model", "generated": "model", "prompt": "prompt", "human": "human",
               "user": "human", "mixed": "mixed"}
TO_LOOM = {"model": "AI", "prompt": "prompt", "human": "human", "mixed": "mixed"}
OWN = {"id", "text", "children", "parent_id", "tags", "meta"}


def read_loom_file(path: Path) -> dict:
    """Parse a Loom JSON file, naming the file and what is wrong with it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise Invalid(f"{path}: line {err.lineno}: not JSON ({err.msg})", field="file") from None
    if not isinstance(data, dict) or not (isinstance(data.get("root"), dict) or is_loomsidian(data)
                                          or is_exoloom(data)):
        raise Invalid(f"{path}: neither a Loom tree file (an object with a 'root' node), a Loomsidian file (a "
                      "note state with 'nodes', or the plugin's data.json with 'state') nor an Exoloom export "
                      "('loomType': 'Exoloom')", field="root")
    return data


def import_any(store: Store, data: dict, author: str, title: str = "") -> list[dict]:
    """Add the trees of a Loom, Loomsidian or Exoloom file (told apart by their shape)."""
    if is_exoloom(data):
        return [import_exoloom(store, data, author, title=title)]
    if is_loomsidian(data):
        return import_loomsidian(store, data, author, title=title)
    return [import_tree(store, data, author, title=title)]


def import_tree(store: Store, data: dict, author: str, title: str = "") -> dict:
    """Add a Loom tree to the store, all of it or nothing (one transaction, after every node
    has been checked); returns the new tree."""
    if not isinstance(data, dict) or not isinstance(data.get("root"), dict):
        raise Invalid("a Loom tree is an object with a 'root' node", field="root")
    root = data["root"]
    _check_node(root, "root")
    nodes, queue = [], [(root, "root")]
    while queue:  # breadth first: parents before children
        node, where = queue.pop(0)
        for i, kid in enumerate(node.get("children") or []):
            place = f"{where}.children[{i}]"
            _check_node(kid, place)
            nodes.append({"key": place, "parent": where, "text": kid.get("text", ""), **_fields(kid, is_root=False)})
            queue.append((kid, place))
    tree_meta = {"loom": {k: v for k, v in data.items() if k != "root"}}
    return store.insert_tree({"key": "root", "text": root.get("text", ""), **_fields(root, is_root=True)}, nodes,
                             author, title=title, meta=tree_meta)


def _check_node(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        raise Invalid(f"{where}: a node must be an object", field=where)
    if not isinstance(node.get("text", ""), str):
        raise Invalid(f"{where}.text: must be a string", field=f"{where}.text")
    if not isinstance(node.get("children", []), list):
        raise Invalid(f"{where}.children: must be a list of nodes", field=f"{where}.children")
    tags = node.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise Invalid(f"{where}.tags: must be a list of non-empty strings", field=f"{where}.tags")
    meta = node.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise Invalid(f"{where}.meta: must be an object (e.g. {{\"source\": \"AI\"}}), got {type(meta).__name__}",
                      field=f"{where}.meta")
    source = (meta or {}).get("source")
    if source is not None and not isinstance(source, str):
        raise Invalid(f"{where}.meta.source: must be a string such as \"AI\", \"prompt\" or \"human\", got "
                      f"{source!r}", field=f"{where}.meta.source")


def _fields(node: dict, is_root: bool) -> dict:
    meta = node.get("meta") if isinstance(node.get("meta"), dict) else {}
    raw_source = meta.get("source")
    source = TO_ALIGNLAB.get(str(raw_source).lower()) if raw_source is not None else None
    if source is None:
        source = "prompt" if is_root else "model"
    loom = {k: v for k, v in node.items() if k not in OWN}
    loom["meta"] = {k: v for k, v in meta.items() if k != "source"} if "meta" in node else None
    loom["source"] = raw_source
    if "id" in node:
        loom["id"] = node["id"]
    # Which of Loom's own keys the file had, so that export writes back exactly those.
    loom["_keys"] = [k for k in ("id", "parent_id", "tags") if k in node]
    return {"source": source, "tags": sorted(set(node.get("tags") or [])), "meta": {"loom": loom}}


def export_tree(store: Store, tree_id: str) -> dict:
    """A tree as a Loom JSON document (archived nodes included: Loom has no archive)."""
    tree = Tree.load(store, tree_id)
    info = store.tree(tree_id)
    loom_ids: dict[str, str] = {}

    def build(node_id: str) -> dict:
        node = tree.nodes[node_id]
        imported = "loom" in node["meta"]
        loom = dict(node["meta"].get("loom") or {})
        keys = loom.pop("_keys", ["id", "parent_id", "tags"])
        out_id = loom.pop("id", None) or node_id
        loom_ids[node_id] = out_id
        raw_source = loom.pop("source", None)
        meta = loom.pop("meta", None)
        out: dict[str, Any] = {"id": out_id, "text": node["text"]} if "id" in keys else {"text": node["text"]}
        parent = node["parent_id"]
        if parent is not None and "parent_id" in keys:
            out["parent_id"] = loom_ids[parent]
        mapped = TO_LOOM[node["source"]]
        source = raw_source if raw_source is not None and TO_ALIGNLAB.get(str(raw_source).lower()) == node["source"] \
            else (None if raw_source is None and imported and _default(node) else mapped)
        if source is not None or meta is not None:
            out["meta"] = {**(meta or {}), **({"source": source} if source is not None else {})}
        if node["tags"] or (imported and "tags" in keys):
            out["tags"] = node["tags"]
        out.update(loom)
        out["children"] = [build(k) for k in tree.children.get(node_id, [])]
        return out

    doc = dict((info["meta"] or {}).get("loom") or {})
    doc["root"] = build(info["root_id"])
    return doc


def _default(node: dict) -> bool:
    """Whether the node's source is what import assumes for a node without one."""
    return node["source"] == ("prompt" if node["parent_id"] is None else "model")




# --- Loomsidian (the Obsidian plugin) -----------------------------------------------------------
#
# Loomsidian keeps each note's tree as a flat map: {"current": id, "hoisted": [ids], "nodes":
# {id: {"text", "parentId", "collapsed", "unread", "bookmarked", "lastVisited", ...}}}; its
# data.json holds {"settings": ..., "state": {note path: that map}}. A node's text is its own
# segment (the full text is the path's concatenation), as in Loom. Loomsidian records no
# source: a root is taken as the prompt and every other node as model text; its own fields are
# kept in meta["loomsidian"].


def is_loomsidian(data: Any) -> bool:
    """Whether ``data`` is a Loomsidian note state or a Loomsidian data.json."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("nodes"), dict):
        return True
    state = data.get("state")
    return isinstance(state, dict) and bool(state) and all(isinstance(v, dict) and isinstance(v.get("nodes"), dict)
                                                          for v in state.values())


def import_loomsidian(store: Store, data: dict, author: str, title: str = "") -> list[dict]:
    """Add the trees of a Loomsidian note state (or of every note in a data.json): one tree per
    root node, each all or nothing; returns the new trees."""
    if not is_loomsidian(data):
        raise Invalid("a Loomsidian file is a note state with a 'nodes' object, or a data.json with a 'state' object "
                      "of note states", field="nodes")
    notes = {"": data} if isinstance(data.get("nodes"), dict) else data["state"]
    plans = []
    for note, state in notes.items():  # check every note before writing any
        where = f"state[{note!r}]" if note else "nodes"
        plans += _loomsidian_trees(state, where, title or Path(note).stem if note else title)
    return [store.insert_tree(root, nodes, author, title=name, meta=meta) for root, nodes, name, meta in plans]


def _loomsidian_trees(state: dict, where: str, title: str) -> list[tuple[dict, list[dict], str, dict]]:
    nodes = state["nodes"]
    kids: dict[str | None, list[str]] = {}
    for node_id, node in nodes.items():
        place = f"{where}.nodes[{node_id!r}]" if where != "nodes" else f"nodes[{node_id!r}]"
        if not isinstance(node, dict):
            raise Invalid(f"{place}: a node must be an object", field=place)
        if not isinstance(node.get("text", ""), str):
            raise Invalid(f"{place}.text: must be a string", field=f"{place}.text")
        parent = node.get("parentId")
        if parent is not None and parent not in nodes:
            raise Invalid(f"{place}.parentId: {parent!r} is not a node of this note", field=f"{place}.parentId")
        kids.setdefault(parent, []).append(node_id)
    roots = kids.get(None, [])
    if not roots:
        raise Invalid(f"{where}: no root node (every node has a parentId): a tree needs one node without a parent",
                      field=where)
    plans = []
    for k, root_id in enumerate(roots):
        order, seen, queue = [], {root_id}, [root_id]
        while queue:  # breadth first: parents before children
            parent = queue.pop(0)
            for child in kids.get(parent, []):
                if child in seen:
                    raise Invalid(f"{where}: node {child!r} is its own ancestor", field=where)
                seen.add(child)
                order.append(child)
                queue.append(child)

        def fields(node_id: str, source: str) -> dict:
            node = nodes[node_id]
            own = {key: value for key, value in node.items() if key not in ("text", "parentId")}
            return {"key": node_id, "text": node.get("text", ""), "source": source,
                    "meta": {"loomsidian": {"id": node_id, **own}}}

        root = fields(root_id, "prompt")
        children = [{**fields(n, "model"), "parent": nodes[n]["parentId"]} for n in order]
        name = title if len(roots) == 1 else f"{title or 'Loomsidian'} ({k + 1} of {len(roots)})"
        meta = {"loomsidian": {key: value for key, value in state.items() if key != "nodes"}}
        plans.append((root, children, name, meta))
    unreached = set(nodes) - {n for _, c, _, _ in plans for n in [x["key"] for x in c]} - set(roots)
    if unreached:
        raise Invalid(f"{where}: nodes {sorted(unreached)[:5]} hang off a cycle and reach no root", field=where)
    return plans


# --- Exoloom (the web app) ------------------------------------------------------------------------
#
# An Exoloom export (schema 1) is {"loomType": "Exoloom", "schemaVersion": 1, "version",
# "tree": {"title", "description", "createdAt", "rootNodeId", "nodes": {id: {"content",
# "authorType": "USER" | "LLM", "authorName", "parentId", "childrenIds", "createdAt"}}},
# "lens": {"bookmarks": [{"nodeId"}], "prunedNodes": [{"nodeId"}]}}. A node's content is its own
# segment, as in Loom. The root is the prompt; an LLM's node is model text (authorName is the
# model), a USER's is a person's; bookmarks are bookmarks; a pruned node is archived (hidden,
# never deleted); each node's ids, author and time are kept in meta["exoloom"], the tree's
# description, version and time in the tree's meta. Nodes the root does not reach (Exoloom keeps
# them only as leftovers) are counted and left out.


def is_exoloom(data: Any) -> bool:
    return isinstance(data, dict) and data.get("loomType") == "Exoloom"


def import_exoloom(store: Store, data: dict, author: str, title: str = "") -> dict:
    """Add an Exoloom tree, all of it or nothing (every node checked before anything is written)."""
    if not is_exoloom(data):
        raise Invalid("an Exoloom export has 'loomType': 'Exoloom'", field="loomType")
    if data.get("schemaVersion") != 1:
        raise Invalid(f"schemaVersion is {data.get('schemaVersion')!r}; alignlab reads Exoloom's schema 1",
                      field="schemaVersion")
    tree, lens = data.get("tree"), data.get("lens") or {}
    if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), dict):
        raise Invalid("tree.nodes: an Exoloom export holds its nodes as an object in 'tree'", field="tree.nodes")
    if not isinstance(lens, dict):
        raise Invalid("lens: must be an object (its bookmarks and pruned nodes)", field="lens")
    nodes = {str(key): node for key, node in tree["nodes"].items()}
    root_id = str(tree.get("rootNodeId"))
    if root_id not in nodes:
        raise Invalid(f"tree.rootNodeId: {tree.get('rootNodeId')!r} is not among tree.nodes", field="tree.rootNodeId")
    marked = {}
    for name in ("bookmarks", "prunedNodes"):
        entries = lens.get(name) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "nodeId" in e for e in entries):
            raise Invalid(f"lens.{name}: must be a list of {{'nodeId': ...}}", field=f"lens.{name}")
        marked[name] = {str(e["nodeId"]) for e in entries}
    for key, node in nodes.items():
        place = f"tree.nodes[{key!r}]"
        if not isinstance(node, dict):
            raise Invalid(f"{place}: a node must be an object", field=place)
        if not isinstance(node.get("content", ""), str):
            raise Invalid(f"{place}.content: must be a string", field=f"{place}.content")
        if node.get("authorType") not in ("USER", "LLM"):
            raise Invalid(f"{place}.authorType: {node.get('authorType')!r}; Exoloom's are USER and LLM",
                          field=f"{place}.authorType")
        if not isinstance(node.get("childrenIds", []), list):
            raise Invalid(f"{place}.childrenIds: must be a list", field=f"{place}.childrenIds")

    def fields(key: str) -> dict:
        node = nodes[key]
        kept = {name: node.get(name) for name in ("authorType", "authorName", "createdAt") if node.get(name) is not None}
        return {"key": key, "text": node.get("content", ""), "bookmarked": key in marked["bookmarks"],
                "meta": {"exoloom": {"id": node_id(key), **kept}}}

    def node_id(key: str):
        return int(key) if key.isdigit() else key

    children, seen, queue = [], {root_id}, [root_id]
    while queue:  # breadth first from the root: parents before children
        parent = queue.pop(0)
        for child in nodes[parent].get("childrenIds", []):
            child = str(child)
            if child not in nodes:
                raise Invalid(f"tree.nodes[{parent!r}].childrenIds: {child!r} is not among tree.nodes",
                              field=f"tree.nodes[{parent!r}].childrenIds")
            if child in seen:
                raise Invalid(f"tree.nodes[{child!r}] is reached twice (a cycle or a shared child)",
                              field=f"tree.nodes[{child!r}]")
            seen.add(child)
            llm = nodes[child]["authorType"] == "LLM"
            children.append({**fields(child), "parent": parent, "source": "model" if llm else "human",
                             "model": nodes[child].get("authorName") if llm else None,
                             "archived": child in marked["prunedNodes"]})
            queue.append(child)
    meta = {"exoloom": {name: data.get(name) for name in ("version", "schemaVersion")}
            | {name: tree.get(name) for name in ("description", "createdAt") if tree.get(name) is not None}
            | {"unreached_nodes": len(nodes) - len(seen)}}
    return store.insert_tree({**fields(root_id), "source": "prompt"}, children, author,
                             title=title or tree.get("title") or "", meta=meta)
