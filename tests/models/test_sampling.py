import math

import pytest
import torch

from alignlab.models import SampleConfig, sample, stream
from alignlab.models.sampling import DRAW_BLOCK, _draw, choose_tokens
from alignlab.models.tokens import encode_prompt

PROMPTS = ["The old lighthouse keeper", "Once upon a time, in a city made entirely of glass, there lived", "Hi"]


def test_batched_sampling_equals_one_by_one(tiny):
    model, tok = tiny
    cfg = SampleConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=11)
    batched = sample(model, tok, PROMPTS, cfg)
    for i, prompt in enumerate(PROMPTS):
        alone = sample(model, tok, [prompt], cfg, seeds=[cfg.seed + i])[0]
        assert alone.token_ids == batched[i].token_ids
        for a, b in zip(alone.tokens, batched[i].tokens):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert a.sample_logprob == pytest.approx(b.sample_logprob, abs=1e-4)


def test_a_seed_reproduces_and_another_seed_differs(tiny):
    model, tok = tiny
    cfg = SampleConfig(max_new_tokens=10, seed=5)
    first = sample(model, tok, PROMPTS[:2], cfg)
    again = sample(model, tok, PROMPTS[:2], cfg)
    other = sample(model, tok, PROMPTS[:2], SampleConfig(max_new_tokens=10, seed=6))
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]


def _full_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


def test_recorded_logprobs_and_alternatives_agree_with_a_full_softmax(tiny):
    model, tok = tiny
    cfg = SampleConfig(max_new_tokens=8, temperature=0.7, top_k=20, alternatives=4, seed=2)
    c = sample(model, tok, [PROMPTS[1]], cfg)[0]
    full = _full_logprobs(model, c.prompt_ids + c.token_ids)
    start = len(c.prompt_ids) - 1
    for t, token in enumerate(c.tokens):
        row = full[start + t]
        assert token.logprob == pytest.approx(float(row[token.id]), abs=1e-4)
        top = torch.topk(row, 4)
        assert [a.id for a in token.alternatives] == top.indices.tolist()
        assert [a.logprob for a in token.alternatives] == pytest.approx(top.values.tolist(), abs=1e-4)
        # the sampling distribution: temperature 0.7 on the top-20 logits, renormalised
        with torch.no_grad():
            logits = model(torch.tensor([c.prompt_ids + c.token_ids[:t]])).logits[0, -1].float()
        values, index = torch.topk(logits / 0.7, 20)
        expected = torch.log_softmax(values, -1)[index.tolist().index(token.id)]
        assert token.sample_logprob == pytest.approx(float(expected), abs=1e-4)


def test_greedy_matches_transformers_generate(tiny):
    model, tok = tiny
    ids = encode_prompt(tok, PROMPTS[0])
    ours = sample(model, tok, [PROMPTS[0]], SampleConfig(max_new_tokens=10, temperature=0))[0]
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, min_new_tokens=10)
    assert ours.token_ids == ref[0, len(ids):].tolist()[:len(ours.token_ids)]
    assert all(t.sample_logprob == 0.0 for t in ours.tokens)


def test_stop_string_ends_the_continuation_and_is_kept(tiny):
    model, tok = tiny
    greedy = sample(model, tok, [PROMPTS[1]], SampleConfig(max_new_tokens=12, temperature=0))[0]
    pieces = [t.text for t in greedy.tokens]
    stop = pieces[5].strip() or pieces[5]
    cut = sample(model, tok, [PROMPTS[1]], SampleConfig(max_new_tokens=12, temperature=0, stop=[stop]))[0]
    assert cut.finish_reason == "stop" and cut.stop_string == stop
    assert stop in cut.text and greedy.text.startswith(cut.text)
    assert len(cut.tokens) <= 6


def test_token_texts_concatenate_to_the_text(tiny):
    model, tok = tiny
    for c in sample(model, tok, PROMPTS, SampleConfig(max_new_tokens=16, seed=3)):
        assert "".join(t.text for t in c.tokens) == c.text
        assert c.finish_reason in ("length", "eos", "stop")


def test_stream_yields_the_same_tokens_as_sample(tiny):
    model, tok = tiny
    cfg = SampleConfig(max_new_tokens=6, seed=9)
    events = list(stream(model, tok, PROMPTS[:2], cfg))
    completions = sample(model, tok, PROMPTS[:2], cfg)
    for row in range(2):
        assert [e.token.id for e in events if e.row == row] == completions[row].token_ids
    assert [e.index for e in events if e.row == 0] == list(range(6))
    assert [e.finish_reason for e in events if e.row == 0][-1] == "length"


def _draws(logits, cfg, n, banned=()):
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    ids, raw, samp, _, _ = choose_tokens(logits.expand(n, -1).clone(), cfg, gens, banned)
    return ids, raw, samp


def test_sampling_frequencies_match_the_processed_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    ids, raw, samp = _draws(logits, SampleConfig(top_p=0.8), 4000)
    # top-p 0.8 keeps {0.5, 0.2, 0.15} (mass before the 4th token is 0.85 >= 0.8)
    assert set(ids.tolist()) == {0, 1, 2}
    freq = torch.bincount(ids, minlength=5).float() / len(ids)
    assert freq[:3].tolist() == pytest.approx([0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85], abs=0.03)
    assert samp[ids == 0][0] == pytest.approx(math.log(0.5 / 0.85), abs=1e-5)
    assert raw[ids == 0][0] == pytest.approx(math.log(0.5), abs=1e-5)


def test_temperature_and_banned_tokens():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    ids, _, samp = _draws(logits, SampleConfig(temperature=2.0), 4000, banned=[0])
    assert 0 not in ids.tolist()
    p = torch.tensor([0.3, 0.1]) ** 0.5
    p = p / p.sum()
    freq = torch.bincount(ids, minlength=3).float()[1:] / len(ids)
    assert freq.tolist() == pytest.approx(p.tolist(), abs=0.03)
    assert samp[ids == 1][0] == pytest.approx(math.log(p[0]), abs=1e-5)


def test_a_wide_nucleus_beyond_the_first_candidates_is_exact():
    # A flat distribution over 5000 tokens: top-p 0.5 needs 2500 of them, past the first 1024
    # candidates, so the search must widen; every kept token has p = 1/2500.
    logits = torch.zeros(1, 5000)
    ids, _, samp = _draws(logits, SampleConfig(top_p=0.5), 200)
    assert samp.tolist() == pytest.approx([math.log(1 / 2500)] * 200, abs=1e-3)
    assert len(set(ids.tolist())) > 150


def _draw_by_full_cdf(probs, keep, uniform):
    """The one-level inverse CDF: first column whose float64 cumulative kept mass exceeds u * total."""
    kept = torch.where(keep, probs, torch.zeros(())).double() if keep is not None else probs.double()
    cdf = kept.cumsum(-1)
    col = torch.searchsorted(cdf, uniform[:, None] * cdf[:, -1:], right=True).clamp(max=kept.shape[1] - 1)
    return col[:, 0]


@pytest.mark.parametrize("width", [7, DRAW_BLOCK, 3 * DRAW_BLOCK + 5])
def test_the_two_level_draw_picks_the_full_cdf_column(width):
    torch.manual_seed(width)
    rows = 400
    probs = torch.softmax(torch.randn(rows, width) * 3, -1)
    probs[:, : width // 2] *= (torch.rand(rows, 1) < 0.3)  # some rows with a first half of zero mass
    keep = torch.rand(rows, width) < 0.7
    keep[:, -1] = True  # the second half always has mass: no row is empty
    uniform = torch.rand(rows, dtype=torch.float64)
    uniform[:3] = torch.tensor([0.0, 1 - 2 ** -53, 0.5])
    for mask in (None, keep):
        col, lp = _draw(probs, mask, uniform)
        reference = _draw_by_full_cdf(probs, mask, uniform)
        kept = probs if mask is None else torch.where(mask, probs, torch.zeros(()))
        # The documented exception: block totals are float32 sums, so a target within float32
        # rounding of a column edge may land on the next kept column. Seen once in 1,200 rows on
        # an AVX2 CPU (a target 4e-10 from the edge); nowhere else may the columns differ.
        cdf = kept.double().cumsum(-1)
        for r in (col != reference).nonzero()[:, 0].tolist():
            lo, hi = sorted((int(col[r]), int(reference[r])))
            assert bool((kept[r, lo + 1:hi] == 0).all()), (r, lo, hi)  # neighbouring kept columns
            target = float(uniform[r]) * float(cdf[r, -1])
            assert abs(float(cdf[r, lo]) - target) < 1e-6 * float(cdf[r, -1]), (r, float(cdf[r, lo]), target)
        assert int((col != reference).sum()) <= 1
        assert bool((kept.gather(1, col[:, None]) > 0).all())  # never a zero-mass column
        expected = (kept.gather(1, col[:, None])[:, 0].double() / kept.double().sum(-1)).log().float()
        assert torch.allclose(lp, expected, atol=1e-6)


@pytest.mark.parametrize("cfg, banned", [(SampleConfig(temperature=0.7, entropy=True), ()),
                                         (SampleConfig(temperature=0.7, entropy=True), (3, 9)),
                                         (SampleConfig(temperature=1.3, top_p=0.9, entropy=True), ()),
                                         (SampleConfig(temperature=0.0, entropy=True), ())])
def test_the_entropy_is_that_of_the_temperature_scaled_distribution_before_filtering(cfg, banned):
    torch.manual_seed(0)
    logits = torch.randn(5, 50) * 2
    gens = [torch.Generator().manual_seed(i) for i in range(5)]
    choice = choose_tokens(logits.clone(), cfg, gens, banned)
    logp = torch.log_softmax(logits.double() / (cfg.temperature or 1.0), -1)
    assert torch.allclose(choice.entropy.double(), -(logp.exp() * logp).sum(-1), atol=1e-5)
    assert choose_tokens(logits.clone(), SampleConfig(temperature=0.7), gens, banned).entropy is None


def test_a_row_with_no_mass_is_refused():
    with pytest.raises(ValueError, match="row 1 has no token"):
        _draw(torch.tensor([[0.5, 0.5], [0.0, 0.0]]), None, torch.tensor([0.3, 0.3], dtype=torch.float64))


def test_bad_settings_are_refused_with_the_field_named(tiny):
    model, tok = tiny
    for bad, field in [(SampleConfig(top_p=0), "top_p"), (SampleConfig(temperature=-1), "temperature"),
                       (SampleConfig(max_new_tokens=0), "max_new_tokens"), (SampleConfig(stop=[""]), "stop")]:
        with pytest.raises(ValueError, match=field):
            sample(model, tok, ["x"], bad)


def test_prompts_sharing_a_template_sample_as_when_each_is_encoded_alone(tiny, monkeypatch):
    import alignlab.models.sampling as sampling

    model, tok = tiny
    template = "Prompt: a story about the sea.\nStory: The waves rolled in and out all night long.\n\nPrompt: "
    prompts = [template + p + "\nStory:" for p in ("a cat", "two rival mapmakers", "a cat")]
    config = SampleConfig(max_new_tokens=6, seed=3, alternatives=0)
    calls = []
    real = sampling.hidden_states

    def counting(model, ids, *args, **kwargs):
        calls.append(tuple(ids.shape))
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(sampling, "hidden_states", counting)
    shared = sample(model, tok, prompts, config, n=2)
    prefix = calls[0]
    assert prefix[0] == 1 and prefix[1] >= 16 and calls[1][0] == 2  # the template once, then 2 distinct rests
    one_by_one = [sample(model, tok, [p], config, seeds=[config.seed + i * 2 + j])[0]
                  for i, p in enumerate(prompts) for j in range(2)]
    for a, b in zip(shared, one_by_one):
        assert [t.id for t in a.tokens] == [t.id for t in b.tokens]
        assert [t.logprob for t in a.tokens] == pytest.approx([t.logprob for t in b.tokens], abs=1e-4)


def test_finished_rows_leave_the_batch_and_the_rest_sample_as_alone(tiny):
    model, tok = tiny
    prompts = ["The old lighthouse keeper", "Once upon a time", "In the beginning", "She said"] * 2
    config = SampleConfig(max_new_tokens=24, temperature=1.0, seed=5, stop=["e"], alternatives=2)
    widths = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: widths.append(out.shape[0]))
    try:
        together = sample(model, tok, prompts, config)
    finally:
        handle.remove()
    lengths = sorted(len(c.tokens) for c in together)
    assert lengths[0] < lengths[-1]  # rows did finish at different steps (a stop string, then the length)
    decode_widths = widths[1:]  # after the prefill, one position per live row
    assert decode_widths[-1] < len(prompts) and decode_widths == sorted(decode_widths, reverse=True)
    for i, prompt in enumerate(prompts):  # each row's draw is its own: the same as sampled alone
        alone = sample(model, tok, [prompt], config, seeds=[config.seed + i])[0]
        assert alone.token_ids == together[i].token_ids and alone.text == together[i].text
        assert [t.logprob for t in alone.tokens] == pytest.approx([t.logprob for t in together[i].tokens], abs=1e-5)
