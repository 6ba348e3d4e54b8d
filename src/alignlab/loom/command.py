"""`alignlab loom` (serve the web app), `loom export`, `loom import`, `loom train`."""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass, field
from pathlib import Path

from alignlab.cli import Command


def _default_annotator() -> str:
    try:
        return getpass.getuser() or "anonymous"
    except (KeyError, OSError):
        return "anonymous"


@dataclass
class StoreOptions:
    data: Path | None = None
    """The loom's data folder (default: $ALIGNLAB_LOOM_DIR, $ALIGNLAB_HOME/loom or ~/.local/share/alignlab/loom)."""
    db: str | None = None
    """A database URL instead of the data folder's SQLite file, e.g. postgresql+psycopg://user@host/loom."""

    def open_store(self):
        from alignlab.home import loom_dir
        from alignlab.loom.store import Store

        return Store.open(self.db, self.data or loom_dir())


@dataclass
class LoomConfig(StoreOptions):
    host: str = "127.0.0.1"
    """Interface to listen on; anything but loopback needs --token."""
    port: int = 8765
    """Port to listen on."""
    model: list[str] = field(default_factory=lambda: ["gemma-3-270m"])
    """Models to steer, side by side (names or folders; the first is the default; repeat the flag)."""
    annotator: str = ""
    """Your name on the feedback you record (default: your login name; a page may send its own in the X-Annotator header)."""
    token: str | None = None
    """Access token, required when --host is not loopback (default: $ALIGNLAB_LOOM_TOKEN)."""
    context_tokens: int = 4096
    """The most tokens a model reads at once (context and continuation; its own window permitting): a longer path keeps its end, and the node records how many tokens were dropped."""
    endpoint: list[str] = field(default_factory=list)
    """A model over an OpenAI-compatible completions endpoint, as NAME=URL[,model=M][,key_env=VAR] (e.g. llama=http://127.0.0.1:8080/v1; the key is read from the variable VAR); repeat the flag."""


@dataclass
class LoomExportConfig(StoreOptions):
    kind: str = "pairs"
    """What to export: pairs, rankings, process, steps (judged steps, for 'prm train'), thumbs, ratings, stops, spans, critiques, demonstrations, edits, events, loom (the original Loom's JSON, one tree), or all."""
    tree: list[str] = field(default_factory=list)
    """Only these trees (ids; repeat the flag). Default: every tree."""
    out: Path = Path("loom-export")
    """A file (one kind), or a folder (--kind all or loom)."""
    style: str = "alignlab"
    """Record layout: alignlab, trl, trl-implicit, trl-conversational (TRL layouts hold one kind each)."""


@dataclass
class LoomImportConfig(StoreOptions):
    file: Path = field(default=Path(), metadata={"positional": True})
    """A tree file in the original Loom's JSON format, Loomsidian's (a note's state, or the plugin's data.json: one tree per root) or an Exoloom export."""
    title: str = ""
    """The tree's title (default: the file's own, else its first line)."""
    annotator: str = ""
    """Recorded as the importer (default: your login name)."""


@dataclass
class LoomTrainConfig(StoreOptions):
    kind: str = "reward"
    """reward (a reward model), dpo, or prm (a process reward model from judged steps)."""
    model: str = "gemma-3-270m"
    """The model to start from."""
    tree: list[str] = field(default_factory=list)
    """Only these trees' feedback (default: all)."""
    using: list[str] = field(default_factory=list)
    """Which exports to train on (see --kind of 'loom export'; default: pairs and process, or steps for prm)."""
    max_steps: int = 20
    """Optimizer steps (reward, dpo)."""
    lora: bool = True
    """DPO: train LoRA adapters only."""
    mode: str = "head"
    """Reward model: what trains (head, last, lora, full)."""


def run_serve(config: LoomConfig) -> int:
    from alignlab.home import loom_dir
    from alignlab.loom.server import LoomSettings, serve

    settings = LoomSettings(data_dir=config.data or loom_dir(), db_url=config.db, models=list(config.model),
                            annotator=config.annotator or _default_annotator(), token=config.token, host=config.host,
                            context_tokens=config.context_tokens, endpoints=list(config.endpoint))
    serve(settings, config.port)
    return 0


def run_export(config: LoomExportConfig) -> int:
    import json

    from alignlab.data.formats import write_feedback
    from alignlab.fileio import atomic_write_text
    from alignlab.loom.export import KINDS, event_rows, records, write_events
    from alignlab.loom.loomjson import export_tree

    store = config.open_store()
    trees = config.tree or None
    for t in trees or []:
        store.tree(t)
    if config.kind == "loom":
        ids = trees or [t["id"] for t in store.trees(include_archived=True)]
        for tree_id in ids:
            path = config.out / f"{tree_id}.json" if len(ids) > 1 or config.out.suffix != ".json" else config.out
            atomic_write_text(path, json.dumps(export_tree(store, tree_id), ensure_ascii=False, indent=1))
            print(f"{path}: tree {tree_id}")
        return 0
    kinds = list(KINDS) + ["events"] if config.kind == "all" else [config.kind]
    for kind in kinds:
        path = config.out / f"{kind}.jsonl" if config.kind == "all" else config.out
        if kind == "events":
            rows = event_rows(store, trees)
            write_events(path, rows)
            print(f"{path}: {len(rows)} events")
            continue
        if kind not in KINDS:
            raise ValueError(f"--kind {kind!r} is not an export; choose from {', '.join(KINDS)}, events, loom or all")
        found, skipped = records(store, kind, trees)
        if config.kind == "all" and not found:
            continue
        write_feedback(path, found, style=config.style)
        left = ", ".join(f"{n} {why}" for why, n in skipped.items())
        print(f"{path}: {len(found)} {kind} records" + (f" (left out: {left})" if left else ""))
    return 0


def run_import(config: LoomImportConfig) -> int:
    from alignlab.loom.loomjson import import_any, read_loom_file

    if not config.file.is_file():
        raise FileNotFoundError(f"{config.file}: no such file; give a Loom JSON tree file, a Loomsidian file or an "
                                "Exoloom export")
    store = config.open_store()
    who = config.annotator or _default_annotator()
    trees = import_any(store, read_loom_file(config.file), who, title=config.title)
    for tree in trees:
        count = len(store.tree_nodes(tree["id"]))
        print(f"imported {config.file} as tree {tree['id']} '{tree['title']}' ({count} nodes)")
    return 0


def run_train(config: LoomTrainConfig) -> int:
    import shutil
    import subprocess

    from alignlab.home import loom_dir
    from alignlab.loom.ids import new_id
    from alignlab.loom.training import TrainRequest, prepare

    store = config.open_store()
    spec = TrainRequest(kind=config.kind, model=config.model, trees=config.tree or None, data=list(config.using),
                        max_steps=config.max_steps, lora=config.lora, mode=config.mode)
    # In the data folder beside the page's own training jobs, not a temporary folder: what the
    # user trains must outlive a reboot's /tmp clean-up.
    folder = Path(config.data or loom_dir()) / "jobs" / new_id()
    folder.mkdir(parents=True)
    try:
        command = prepare(store, spec, folder, config.model)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused request leaves nothing behind
        raise
    print("alignlab loom train: " + " ".join(command[3:]), file=sys.stderr)
    code = subprocess.call(command, stdin=subprocess.DEVNULL)
    if code == 0:
        print(f"trained: {folder / 'result'} (add it in the loom with --model {folder / 'result'})")
    return code


LOOM = Command("loom", "the loom: steer a base model by hand in a web app, recording your curation as feedback",
               LoomConfig, run_serve)
LOOM_EXPORT = Command("loom export", "export what the loom recorded as datasets (or Loom JSON)",
                      LoomExportConfig, run_export)
LOOM_IMPORT = Command("loom import", "import trees from the original Loom's JSON, Loomsidian or Exoloom", LoomImportConfig,
                      run_import)
LOOM_TRAIN = Command("loom train", "train a reward model, DPO or a process reward model on the loom's feedback",
                     LoomTrainConfig, run_train)
