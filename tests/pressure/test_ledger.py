import json
import math

import pytest

from alignlab.cli import main
from alignlab.pressure import build_ledger, read_ledger
from alignlab.train.bon import BoNConfig, run_best_of_n


def test_best_of_n_ledger_uses_the_analytic_kl_and_prints(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Tell me about place {i}." for i in range(5)) + "\n")
    run = run_best_of_n(BoNConfig(prompts=prompts, reward="tests.train.rewards_for_tests:vowel_share",
                                  gold="tests.train.rewards_for_tests:length_judge", model="tiny",
                                  n=[1, 2, 4, 8, 16], max_new_tokens=8), progress=False)
    ledger = read_ledger(run.path)
    assert ledger.method == "bon" and ledger.has_gold
    assert [p.kl for p in ledger.points] == pytest.approx([math.log(n) - (n - 1) / n for n in (1, 2, 4, 8, 16)])
    assert ledger.reference_gold == ledger.points[0].gold  # n = 1 is the base policy
    assert ledger.fit is not None and ledger.fit.form == "bon" and ledger.fit.points == 4
    assert main(["pressure", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "n=16" in out and "Gao fit d(alpha - beta d)" in out and "reference gold" in out
    assert main(["pressure", run.id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "bon" and len(data["points"]) == 5 and data["fit"]["form"] == "bon"


def test_ledger_flags_an_overoptimised_rl_run_and_names_missing_files(tmp_path):
    entries = [{"step": s, "objective/kl": kl, "objective/scores": p, "gold": g}
               for s, kl, p, g in [(1, 0.0, 0.0, 0.0), (2, 1.0, 0.4, 0.3), (3, 4.0, 0.8, 0.45), (4, 9.0, 1.1, 0.35),
                                   (5, 16.0, 1.3, 0.1)]]
    ledger = build_ledger({"method": "ppo", "reference": "base", "beta": 0.05, "entries": entries})
    assert ledger.fit.form == "rl" and 1.0 < ledger.fit.peak_d < 4.0
    assert [p.past_peak for p in ledger.points] == [False, False, False, True, True]
    ledger = build_ledger({"method": "dpo", "reference": "base", "beta": 0.1,
                           "entries": [{"step": 1, "objective/kl": 0.2}]})
    assert not ledger.has_gold and ledger.fit is None
    with pytest.raises(FileNotFoundError, match="pressure.json"):
        read_ledger(tmp_path)
    (tmp_path / "pressure.json").write_text("{oops")
    with pytest.raises(ValueError, match="line 1"):
        read_ledger(tmp_path)
