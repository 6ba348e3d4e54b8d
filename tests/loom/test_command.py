"""`alignlab loom export|import|train` end to end on a real SQLite store and the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from alignlab.cli import main
from alignlab.data.formats import read_feedback
from alignlab.loom.store import Store


def _session(data_dir):
    store = Store.open(None, data_dir)
    tree = store.create_tree("Describe the sea.\n", "ada")
    texts = [" The sea is wide and grey.", " Water.", " The waves roll in slowly.", " Salt."]
    nodes = store.add_nodes(tree["root_id"], [{"text": t} for t in texts], "ada")
    for good, bad in ((0, 1), (2, 3), (0, 3), (2, 1)):
        store.record(tree["id"], "compare", {"a": nodes[good]["id"], "b": nodes[bad]["id"], "choice": "a"}, "ada")
    store.record(tree["id"], "thumb", {"value": "up"}, "ada", node_id=nodes[0]["id"])
    store.close()
    return tree


def test_export_all_and_loom_json_then_import(tmp_path, capsys):
    data = tmp_path / "loom"
    tree = _session(data)
    out = tmp_path / "out"
    assert main(["loom", "export", "--data", str(data), "--kind", "all", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 pairs records" in printed and "1 thumbs records" in printed
    assert len(read_feedback(out / "pairs.jsonl").records) == 4
    assert (out / "events.jsonl").read_text().count("\n") >= 6
    assert main(["loom", "export", "--data", str(data), "--kind", "pairs", "--style", "trl",
                 "--out", str(tmp_path / "trl.jsonl")]) == 0
    assert set(json.loads((tmp_path / "trl.jsonl").read_text().splitlines()[0])) == {"prompt", "chosen", "rejected"}
    assert main(["loom", "export", "--data", str(data), "--kind", "loom", "--out", str(tmp_path / "t.json")]) == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    assert len(doc["root"]["children"]) == 4
    assert main(["loom", "import", str(tmp_path / "t.json"), "--data", str(data), "--title", "copy"]) == 0
    assert "imported" in capsys.readouterr().out
    store = Store.open(None, data)
    assert sorted(t["title"] for t in store.trees()) == ["Describe the sea.", "copy"]
    store.close()
    assert main(["loom", "export", "--data", str(data), "--kind", "nonsense", "--out", str(tmp_path / "x")]) == 1
    assert "not an export" in capsys.readouterr().err
    assert main(["loom", "import", str(tmp_path / "missing.json"), "--data", str(data)]) == 1
    assert tree["id"]


def test_train_a_reward_model_and_dpo_from_the_loom(tmp_path, capsys):
    data = tmp_path / "loom"
    _session(data)
    assert main(["loom", "train", "--data", str(data), "--kind", "reward", "--model", "tiny", "--max-steps", "2",
                 "--using", "pairs"]) == 0
    result = capsys.readouterr().out.strip().split("trained: ")[1].split(" ")[0]
    assert Path(result).parent.parent == data / "jobs"  # kept in the data folder, not a temporary one
    from alignlab.train.reward_model import load_reward_model

    rm = load_reward_model(result)
    mean, spread = rm.score(["Describe the sea.\n"], [" The sea is wide."])
    assert mean.shape == (1,) and spread.shape == (1,)
    assert main(["loom", "train", "--data", str(data), "--kind", "dpo", "--model", "tiny", "--max-steps", "1"]) == 0
    assert "trained:" in capsys.readouterr().out
    assert main(["loom", "train", "--data", str(data), "--kind", "dpo", "--using", "thumbs"]) == 1
    assert "preference pairs" in capsys.readouterr().err
    assert len(list((data / "jobs").iterdir())) == 2  # the refused request left no folder
    assert main(["loom", "train", "--data", str(data), "--kind", "reward", "--using", "steps"]) == 1
    assert "--kind prm" in capsys.readouterr().err
    assert main(["loom", "train", "--data", str(data), "--kind", "prm", "--model", "tiny"]) == 1
    assert "no steps yet: judge some steps" in capsys.readouterr().err  # this session judged none
    assert len(list((data / "jobs").iterdir())) == 2


def test_import_reads_an_exoloom_export_from_the_command_line(tmp_path, capsys):
    from tests.loom.test_store import EXOLOOM

    path = tmp_path / "exo.json"
    path.write_text(json.dumps(EXOLOOM))
    data = tmp_path / "loom"
    assert main(["loom", "import", str(path), "--data", str(data)]) == 0
    assert "'The fox' (4 nodes)" in capsys.readouterr().out
    path.write_text(json.dumps({**EXOLOOM, "schemaVersion": 3}))
    assert main(["loom", "import", str(path), "--data", str(data)]) == 1
    assert "schemaVersion" in capsys.readouterr().err
