"""Model surgery: task vectors, layer interventions, stitching, and the `alignlab surgery` commands."""

import json
import math

import pytest
import torch

from alignlab.cli import main
from alignlab.runs import list_runs
from alignlab.whitebox import surgery as S

TEXT = ("The committee met on a grey morning to weigh the proposal. Each member read the report twice, "
        "marked the passages that worried them, and asked the author to explain the numbers. ") * 12


def small_gemma(layer_types, hidden=32, vocab=128, seed=0):
    """A random Gemma 3 without a tokenizer, for structural tests on token ids."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=64,
                              num_hidden_layers=len(layer_types), num_attention_heads=2, num_key_value_heads=1,
                              head_dim=16, max_position_embeddings=256, sliding_window=8,
                              layer_types=list(layer_types), tie_word_embeddings=True)
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config).eval()


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model, saved):
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)


IDS = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))


# -- task vectors -----------------------------------------------------------------------------------

def test_task_vector_apply_reaches_the_finetuned_weights_and_the_context_restores_them_exactly():
    pre, ft = small_gemma(["full_attention"] * 2, seed=0), small_gemma(["full_attention"] * 2, seed=1)
    tau = S.task_vector(pre, ft)
    assert "lm_head.weight" not in tau  # tied to the embedding: counted once, not added twice
    saved = state(pre)
    with S.task_vector_applied(pre, tau, 1.0):
        for name, value in ft.state_dict().items():
            assert torch.allclose(pre.state_dict()[name], value, atol=1e-6), name
        with S.task_vector_applied(pre, S.negate(tau), 1.0):  # add then negate: back at the start
            assert all(torch.allclose(pre.state_dict()[k], v, atol=1e-6) for k, v in saved.items())
    assert same_state(pre, saved)
    assert torch.equal(logits_of(pre, IDS), logits_of(small_gemma(["full_attention"] * 2, seed=0), IDS))


def test_negate_and_add_are_exact_inverses():
    tau = {"a": torch.tensor([1.5, -2.25, 0.1]), "b": torch.tensor([[3.0]])}
    assert all(torch.equal(S.negate(S.negate(tau))[k], tau[k]) for k in tau)
    zero = S.add(tau, S.negate(tau))
    assert all(torch.equal(zero[k], torch.zeros_like(tau[k])) for k in tau)
    assert torch.equal(S.add(tau, tau, tau)["a"], torch.tensor([4.5, -6.75, 0.1 + 0.1 + 0.1]))


def test_analogy_is_c_plus_b_minus_a_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    b = {"w": torch.tensor([4.0, 0.0]), "b": torch.tensor([1.5])}
    c = {"w": torch.tensor([-1.0, 10.0]), "b": torch.tensor([0.0])}
    d = S.analogy(a, b, c)
    assert torch.equal(d["w"], torch.tensor([2.0, 8.0])) and torch.equal(d["b"], torch.tensor([1.0]))


def test_task_vector_skips_integer_buffers_and_names_mismatched_tensors():
    pre = {"w": torch.ones(2), "steps": torch.tensor([3])}
    ft = {"w": torch.full((2,), 1.5), "steps": torch.tensor([7])}
    assert set(S.task_vector(pre, ft)) == {"w"}
    with pytest.raises(ValueError, match=r"only in the fine-tuned model: extra"):
        S.task_vector(pre, {**ft, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"w \(2,\) vs \(3,\)"):
        S.task_vector(pre, {"w": torch.zeros(3)})


def test_task_vector_file_round_trip_keeps_tensors_and_metadata(tmp_path):
    tau = {"layers.0.w": torch.randn(3, 2), "norm.weight": torch.randn(4)}
    S.save_task_vector(tau, tmp_path / "tau.safetensors", {"pretrained": "tiny", "coefficient": 0.5})
    back, meta = S.load_task_vector(tmp_path / "tau.safetensors")
    assert all(torch.equal(back[k], tau[k]) for k in tau) and set(back) == set(tau)
    assert meta["pretrained"] == "tiny" and json.loads(meta["coefficient"]) == 0.5
    assert meta["format"] == "alignlab-task-vector"


def test_choose_coefficient_picks_the_best_and_leaves_the_model_unchanged():
    model = small_gemma(["full_attention"], seed=0)
    tau = {"model.norm.weight": torch.ones_like(model.model.norm.weight)}
    saved = state(model)
    best, rows = S.choose_coefficient(model, tau, [0.0, 1.0, 2.0, 3.0],
                                      lambda m: abs(m.model.norm.weight.mean().item() - 2.0))
    assert best == 2.0 and [r["coefficient"] for r in rows] == [0.0, 1.0, 2.0, 3.0]
    assert same_state(model, saved)


# -- layer interventions ----------------------------------------------------------------------------

def test_swapping_twice_is_the_identity_bit_for_bit():
    model = small_gemma(["sliding_attention", "full_attention", "sliding_attention"])
    saved, before, types = state(model), logits_of(model, IDS), list(model.config.layer_types)
    with S.layers_swapped(model, 0):
        once = logits_of(model, IDS)
        assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
        assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
        with S.layers_swapped(model, 0):
            assert same_state(model, saved)
            assert torch.equal(logits_of(model, IDS), before)
    assert not torch.allclose(once, before)
    assert same_state(model, saved) and torch.equal(logits_of(model, IDS), before)
    assert model.config.layer_types == types
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]


def test_swapped_layers_keep_their_own_attention_type():
    # Layer 0 is sliding (window 8), layer 1 full. Swapped, the full-attention module must still
    # see the whole context: moving it back by hand into a model with the same order reproduces it.
    model = small_gemma(["sliding_attention", "full_attention"])
    other = small_gemma(["full_attention", "sliding_attention"])
    sd = model.state_dict()
    swapped = {k.replace("layers.0.", "layers.X.").replace("layers.1.", "layers.0.").replace("layers.X.", "layers.1."): v
               for k, v in sd.items()}
    other.load_state_dict(swapped)
    with S.layers_swapped(model, 0):
        assert torch.equal(logits_of(model, IDS), logits_of(other, IDS))


def test_swapping_two_identical_layers_changes_nothing():
    model = small_gemma(["sliding_attention"] * 3)
    model.model.layers[2].load_state_dict(model.model.layers[1].state_dict())
    before = logits_of(model, IDS)
    with S.layers_swapped(model, 1):
        assert torch.equal(logits_of(model, IDS), before)
    with S.layers_swapped(model, 0):  # two different layers: a real change
        assert not torch.allclose(logits_of(model, IDS), before)


def test_deleting_a_layer_changes_outputs_and_restores_after():
    model = small_gemma(["sliding_attention", "full_attention"])
    saved, before = state(model), logits_of(model, IDS)
    with S.layer_deleted(model, 1):
        deleted = logits_of(model, IDS)
        # Deleting the last layer leaves the residual stream after layer 0: the same as a one-layer model.
        one = small_gemma(["sliding_attention"])
        one.load_state_dict({k: v for k, v in saved.items() if "layers.1." not in k})
        assert torch.allclose(deleted, logits_of(one, IDS), atol=1e-6)
    assert not torch.allclose(deleted, before)
    assert same_state(model, saved) and torch.equal(logits_of(model, IDS), before)


def test_layer_out_of_range_names_the_range():
    model = small_gemma(["full_attention"] * 2)
    with pytest.raises(ValueError, match=r"layers 0\.\.1"):
        with S.layer_deleted(model, 2):
            pass
    with pytest.raises(ValueError, match="at most 0"):
        with S.layers_swapped(model, 1):
            pass


def test_comparison_metrics_against_hand_computation():
    ln2 = math.log(2.0)
    original = torch.tensor([[0.0, ln2, 0.0], [2.0, 0.0, 0.0]])  # p = (1/4, 1/2, 1/4); (e^2, 1, 1)/(e^2+2)
    intervened = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # q = (1/3, 1/3, 1/3); the same
    targets = torch.tensor([1, 0])
    c = S.compare_logits(original, intervened, targets)
    assert torch.allclose(c.kl, torch.tensor([0.5 * math.log(9 / 8), 0.0]), atol=1e-6)
    assert torch.allclose(c.nll_original, torch.tensor([ln2, math.log((math.e ** 2 + 2) / math.e ** 2)]), atol=1e-6)
    assert torch.allclose(c.nll_intervened, torch.tensor([math.log(3), math.log((math.e ** 2 + 2) / math.e ** 2)]),
                          atol=1e-6)
    assert c.agree.tolist() == [0.0, 1.0]  # argmax of a tie is the first: token 0
    assert c.correct_original.tolist() == [1.0, 1.0] and c.correct_intervened.tolist() == [0.0, 1.0]
    s = S.summarize([c])
    assert s["top1_agreement"] == 0.5 and s["accuracy_original"] == 1.0 and s["accuracy"] == 0.5
    assert s["top1_retention"] == 0.5 and s["tokens"] == 2
    assert s["loss_change"] == pytest.approx((math.log(3) - ln2) / 2, abs=1e-6)
    assert s["kl"] == pytest.approx(0.25 * math.log(9 / 8), abs=1e-6)


def test_the_fast_comparison_equals_the_plain_one():
    torch.manual_seed(0)
    original = 4 * torch.randn(16, 5000)
    intervened = original + 0.3 * torch.randn(16, 5000)
    targets = torch.randint(0, 5000, (16,))
    plain = S.compare_logits(original, intervened, targets)
    fast = S._compare_with(S._original(original, targets), intervened, targets)
    for name in ("kl", "nll_original", "nll_intervened", "agree", "correct_original", "correct_intervened"):
        assert torch.allclose(getattr(fast, name), getattr(plain, name), atol=1e-5), name


def test_layer_sweep_on_the_tiny_model(tiny):
    model, tokenizer = tiny
    windows = S.text_windows(tokenizer, TEXT, context=32, max_tokens=120)
    assert windows.shape[1] == 32 and (windows[:, 0] == tokenizer.bos_token_id).all()
    saved = state(model)
    rows = S.layer_sweep(model, windows)
    assert [(r["intervention"], r["layer"]) for r in rows] == [("delete", 0), ("delete", 1), ("swap", 0)]
    assert all(r["kl"] > 0 and r["tokens"] == windows[:, 1:].numel() for r in rows)
    assert same_state(model, saved)


# -- stitching --------------------------------------------------------------------------------------

def chains(count, length=24, vocab=128, seed=0):
    """Token sequences that follow one fixed permutation: next = PERM[current]."""
    perm = torch.randperm(vocab, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, vocab, (count,), generator=g)]
    for _ in range(length - 1):
        rows.append(perm[rows[-1]])
    return torch.stack(rows, 1)  # (count, length)


@pytest.fixture(scope="module")
def learned():
    """A small Gemma 3 trained until it predicts the permutation chains well (a model whose loss
    means something: a random model's predictions barely depend on its input)."""
    model = small_gemma(["sliding_attention", "full_attention"])
    data = chains(64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small only pay for the hand-off between threads
    try:
        for step in range(60):
            batch = data[(step * 16) % 64:(step * 16) % 64 + 16]
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    assert S.heldout_loss(model, chains(8, seed=1)) < 0.5
    return model


def test_stitching_a_model_to_itself_costs_nothing_and_beats_a_random_bottom(learned):
    train, held = chains(32, seed=2), chains(8, seed=3)
    base = S.heldout_loss(learned, held)
    untrained = S.train_stitch(learned, learned, train, layer=1, steps=0)  # least squares: the identity map
    assert S.stitched_loss(learned, learned, untrained, held, layer=1) == pytest.approx(base, abs=1e-4)
    stitch = S.train_stitch(learned, learned, train, layer=1, steps=5, lr=1e-3)
    penalty = S.stitched_loss(learned, learned, stitch, held, layer=1) - base
    control = S.randomly_initialised(learned, seed=1)
    random_stitch = S.train_stitch(control, learned, train, layer=1, steps=5, lr=1e-3)
    control_penalty = S.stitched_loss(control, learned, random_stitch, held, layer=1) - base
    assert abs(penalty) < 0.05
    assert control_penalty > penalty + 0.5
    assert all(p.requires_grad for p in learned.parameters())  # frozen only while training


def test_training_the_stitch_lowers_its_loss(learned):
    losses = []
    stitch = S.train_stitch(learned, learned, chains(32, seed=2), layer=1, steps=30, lr=1e-2, init="random",
                            normalize=True, on_step=lambda i, loss: losses.append(loss))
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < losses[0] - 0.5
    assert stitch.normalize


def test_stitching_refuses_different_hidden_sizes_and_bad_layers():
    a, b = small_gemma(["full_attention"] * 2, hidden=32), small_gemma(["full_attention"] * 2, hidden=64)
    with pytest.raises(ValueError, match="hidden size is 32 and the top model's 64"):
        S.check_stitchable(a, b, 1)
    with pytest.raises(ValueError, match=r"layer must be in 1\.\.1"):
        S.check_stitchable(a, a, 2)


# -- the commands -----------------------------------------------------------------------------------

@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(tmp_path / "runs"))
    text = tmp_path / "held-out.txt"
    text.write_text(TEXT)
    return tmp_path, text


def cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_layers_writes_the_table_plot_and_report(runs, capsys):
    tmp, text = runs
    code, out, err = cli(["surgery", "layers", "--model", "tiny", "--text", str(text), "--context", "32",
                          "--max-tokens", "100", "--layers", "0", "--out", str(tmp / "copy")], capsys)
    assert code == 0, err
    assert "| layer |" in out and "delete top-1 retention" in out
    (run,) = list_runs(tmp / "runs")
    assert run.kind == "surgery-layers" and run.state == "finished" and len(run.metrics) == 2
    for name in ("summary.json", "layers.csv", "surgery-layers.png", "report.md"):
        assert (run.path / name).is_file() and (tmp / "copy" / name).is_file()
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["layers"] == 2 and [(r["intervention"], r["layer"]) for r in summary["rows"]] == [
        ("delete", 0), ("swap", 0)]


def test_cli_layers_errors_name_the_field(runs, capsys):
    tmp, text = runs
    code, _, err = cli(["surgery", "layers", "--model", "tiny"], capsys)
    assert code == 1 and "--text FILE" in err
    code, _, err = cli(["surgery", "layers", "--model", "tiny", "--text", str(tmp / "none.txt")], capsys)
    assert code == 1 and "none.txt does not exist" in err
    code, _, err = cli(["surgery", "layers", "--model", "tiny", "--text", str(text), "--layers", "5"], capsys)
    assert code == 1 and "--layers entry 5 is out of range" in err


def test_cli_stitch_reports_the_penalty_and_the_control(runs, capsys):
    tmp, text = runs
    code, out, err = cli(["surgery", "stitch", "--bottom", "tiny", "--top", "tiny", "--layer", "1", "--text",
                          str(text), "--context", "32", "--steps", "2", "--held-out", "0.5"], capsys)
    assert code == 0, err
    assert "penalty" in out and "random-bottom" in out
    (run,) = list_runs(tmp / "runs")
    summary = json.loads((run.path / "summary.json").read_text())
    assert set(summary) >= {"loss_top", "stitch", "random-bottom"}
    assert all((run.path / n).is_file() for n in ("stitch.png", "stitch.safetensors", "report.md"))
    code, _, err = cli(["surgery", "stitch", "--bottom", "tiny", "--top", "tiny", "--layer", "2", "--text",
                        str(text)], capsys)
    assert code == 1 and "layer must be in 1..1" in err


def finetuned_tiny(tmp):
    """A differently seeded tiny model saved as the 'fine-tuned' one: (the model, its folder)."""
    from alignlab.models.loading import tiny_model

    finetuned, tokenizer = tiny_model(seed=1)
    finetuned.save_pretrained(str(tmp / "ft"))
    tokenizer.save_pretrained(str(tmp / "ft"))
    return finetuned, tmp / "ft"


def make_tau(tmp, capsys):
    """`task-vector make` of the fine-tuned tiny model against tiny: the vector file."""
    finetuned, folder = finetuned_tiny(tmp)
    tau = tmp / "tau.safetensors"
    code, _, err = cli(["surgery", "task-vector", "make", "--pretrained", "tiny", "--finetuned", str(folder),
                        "--out", str(tau)], capsys)
    assert code == 0, err
    return finetuned, tau


def test_cli_task_vector_make_negate_add_analogy_apply(runs, capsys, tiny):
    tmp, text = runs
    finetuned, tau = make_tau(tmp, capsys)
    vector, meta = S.load_task_vector(tau)
    assert meta["finetuned"] == str(tmp / "ft")
    expected = S.task_vector(tiny[0], finetuned)
    assert set(vector) == set(expected) and all(torch.equal(vector[k], expected[k]) for k in vector)
    code, _, err = cli(["surgery", "task-vector", "negate", "--vectors", str(tau), "--out", str(tmp / "neg.safetensors")],
                       capsys)
    assert code == 0, err
    code, _, err = cli(["surgery", "task-vector", "add", "--vectors", str(tau), str(tmp / "neg.safetensors"),
                        "--out", str(tmp / "zero.safetensors")], capsys)
    assert code == 0, err
    assert all(not v.any() for v in S.load_task_vector(tmp / "zero.safetensors")[0].values())
    code, _, err = cli(["surgery", "task-vector", "analogy", "--vectors", str(tau), str(tau), str(tau),
                        "--out", str(tmp / "same.safetensors")], capsys)
    assert code == 0, err
    code, out, err = cli(["surgery", "task-vector", "apply", "--pretrained", "tiny", "--vectors", str(tau),
                          "--choose-on", str(text), "--coefficients", "0", "1", "--context", "32",
                          "--max-tokens", "64", "--out", str(tmp / "edited")], capsys)
    assert code == 0, err
    assert "c =      0" in out and (tmp / "edited" / "config.json").is_file()
    kinds = [r.kind for r in list_runs(tmp / "runs")]
    assert kinds == ["surgery-task-vector"] * 5
    last = list_runs(tmp / "runs")[-1]
    assert (last.path / "coefficients.png").is_file() and len(last.metrics) == 2
    code, _, err = cli(["surgery", "task-vector", "analogy", "--vectors", str(tau)], capsys)
    assert code == 1 and "three files, A B C" in err
    code, _, err = cli(["surgery", "task-vector", "apply", "--pretrained", "tiny", "--vectors", str(tau)], capsys)
    assert code == 1 and "--coefficient C or --choose-on FILE" in err


def test_cli_task_vector_apply_chooses_the_coefficient_by_mean_reward(runs, capsys, tiny):
    import json

    from alignlab.models import SampleConfig, sample
    from alignlab.models.loading import tiny_model
    from tests.train.rewards_for_tests import vowel_share

    tmp, _ = runs
    _, tau_path = make_tau(tmp, capsys)
    prompts = ["Tell me about the sea.", "Describe a morning.", "What is a lighthouse?"]
    (tmp / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    code, out, err = cli(["surgery", "task-vector", "apply", "--pretrained", "tiny", "--vectors", str(tau_path),
                          "--choose-on", str(tmp / "prompts.jsonl"), "--coefficients", "-1", "0", "1", "2",
                          "--reward", "tests.train.rewards_for_tests:vowel_share", "--max-new-tokens", "8"], capsys)
    assert code == 0, err
    summary = json.loads((list_runs(tmp / "runs")[-1].path / "summary.json").read_text())
    assert summary["metric"] == "mean reward" and summary["higher_is_better"] is True
    tau, _ = S.load_task_vector(tau_path)
    for row in summary["table"]:  # each value is the mean reward of greedy completions of the edited model
        model, tok = tiny_model(seed=0)
        S.apply_task_vector(model, tau, row["coefficient"])
        done = sample(model, tok, prompts, SampleConfig(max_new_tokens=8, temperature=0.0))
        want = sum(vowel_share(p, c.text) for p, c in zip(prompts, done)) / len(prompts)
        assert row["value"] == pytest.approx(want, abs=1e-6), row
    values = {r["coefficient"]: r["value"] for r in summary["table"]}
    assert summary["best"] == max(values, key=values.get) and summary["coefficient"] == summary["best"]
    assert len(set(values.values())) > 1  # the coefficient changed what the model wrote
    assert "mean reward" in out
