import pytest
import torch

from alignlab.models import SampleConfig, sample, score, token_logprobs
from alignlab.models.forward import hidden_states, output_logits
from alignlab.models.scoring import build_batch


def test_output_logits_equal_the_models_own(tiny):
    model, tok = tiny
    ids = torch.tensor([tok("A short sentence to check the head.")["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hidden, _ = hidden_states(model, ids, mask)
        ours = output_logits(model, hidden)
        assert torch.allclose(ours, model(ids).logits, atol=1e-5)
        assert torch.allclose(output_logits(model, hidden[:, :3]), model(ids).logits[:, :3], atol=1e-5)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_token_logprobs_under_padding_equal_a_manual_unpadded_computation(tiny, padding):
    model, tok = tiny
    prompts = [tok("Write about the sea.")["input_ids"], tok("Hi")["input_ids"]]
    conts = [tok(" Waves roll in slowly", add_special_tokens=False)["input_ids"],
             tok(" there, friend. How are you today?", add_special_tokens=False)["input_ids"]]
    ids, mask, target = build_batch(prompts, conts, tok.pad_token_id, padding)
    with torch.no_grad():
        got = token_logprobs(model, ids, mask, target)
        for row, (p, c) in enumerate(zip(prompts, conts)):
            full = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
            expected = [float(full[len(p) - 1 + t, c[t]]) for t in range(len(c))]
            assert got[row][target[row]].tolist() == pytest.approx(expected, abs=1e-4)
            assert (got[row][~target[row]] == 0).all()


def test_batched_scores_equal_unbatched_and_padding_side_does_not_matter(tiny):
    model, tok = tiny
    prompts = ["The cat", "A much longer prompt about a lighthouse and its keeper", ""]
    conts = [" sat on the mat.", " who never slept.", "Hello"]
    together = score(model, tok, prompts, conts, batch_size=3, padding="left")
    right = score(model, tok, prompts, conts, batch_size=3, padding="right")
    for i in range(3):
        alone = score(model, tok, [prompts[i]], [conts[i]], batch_size=1)[0]
        assert together[i].logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert right[i].logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_scoring_agrees_with_the_logprobs_recorded_while_sampling(tiny):
    model, tok = tiny
    completions = sample(model, tok, ["Tell me a story", "Rain"], SampleConfig(max_new_tokens=10, top_p=0.9, seed=1))
    scored = score(model, tok, [c.prompt_ids for c in completions], [c.token_ids for c in completions])
    for c, s in zip(completions, scored):
        assert s.logprobs == pytest.approx([t.logprob for t in c.tokens], abs=1e-4)


def test_temperature_scales_the_logits(tiny):
    model, tok = tiny
    prompt, cont = tok("Hello")["input_ids"], tok(" world", add_special_tokens=False)["input_ids"]
    ids, mask, target = build_batch([prompt], [cont], tok.pad_token_id)
    with torch.no_grad():
        got = token_logprobs(model, ids, mask, target, temperature=0.5)[0, target[0]]
        logits = model(ids).logits[0, len(prompt) - 1].float() / 0.5
    assert float(got[0]) == pytest.approx(float(torch.log_softmax(logits, -1)[cont[0]]), abs=1e-4)


def test_token_logprobs_keep_gradients(tiny):
    model, tok = tiny
    ids, mask, target = build_batch([tok("Hello")["input_ids"]], [[1000, 2000]], tok.pad_token_id)
    total = token_logprobs(model, ids, mask, target).sum()
    total.backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_mismatched_lengths_and_position_zero_targets_are_refused(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="2 prompts but 1"):
        score(model, tok, ["a", "b"], ["c"])
    ids = torch.tensor([[2, 5, 6]])
    with pytest.raises(ValueError, match="position 0"):
        token_logprobs(model, ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("cap", [None, 5.0])
@pytest.mark.parametrize("bias", [False, True])
def test_output_target_logprobs_equal_autograds_linear_log_softmax_and_gather(dtype, temperature, cap, bias):
    from alignlab.models.scoring import OutputTargetLogProbs

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(6, 8, generator=gen).to(dtype)
    w = (torch.randn(50, 8, generator=gen) * 2).to(dtype)
    b = torch.randn(50, generator=gen).to(dtype) if bias else None
    targets = torch.randint(0, 50, (6,), generator=gen)
    weights = torch.randn(6, generator=gen)
    mine = [t.clone().requires_grad_() if t is not None else None for t in (h, w, b)]
    ref = [t.clone().requires_grad_() if t is not None else None for t in (h, w, b)]
    got = OutputTargetLogProbs.apply(mine[0], mine[1], mine[2], targets, temperature, cap)
    z = torch.nn.functional.linear(ref[0], ref[1], ref[2]).float()
    if cap:
        z = torch.tanh(z / cap) * cap
    want = torch.log_softmax(z / temperature, -1).gather(1, targets[:, None])[:, 0]
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    assert got.dtype == torch.float32
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    assert torch.allclose(got, want, atol=tol)
    for a, r in zip(mine, ref):
        if a is not None:
            assert a.grad.dtype == dtype
            assert torch.allclose(a.grad.float(), r.grad.float(), atol=tol, rtol=tol)


def test_output_target_logprobs_refuses_a_second_backward():
    from alignlab.models.scoring import OutputTargetLogProbs

    h = torch.randn(3, 4, requires_grad=True)
    out = OutputTargetLogProbs.apply(h, torch.randn(8, 4), None, torch.tensor([1, 2, 3]), 1.0, None).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        out.backward()


def test_tied_sparse_embedding_gradient_equals_the_dense_one(tiny):
    """The output layer's gradient written straight into the tied weight's .grad, plus the sparse
    embedding rows added by autograd, equals plain dense autograd (twice: accumulation too)."""
    from alignlab.models.scoring import token_logprobs
    from alignlab.train.loop import sparse_embedding_gradients

    model, _ = tiny
    ids = torch.tensor([[2, 10, 11, 12, 13, 14], [2, 20, 21, 22, 23, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    target = mask.bool() & (torch.arange(6) >= 2)
    weight = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is weight
    grads = []
    for sparse in (False, True):
        sparse_embedding_gradients(model, sparse)
        model.zero_grad(set_to_none=True)
        for scale in (1.0, 0.5):
            (token_logprobs(model, ids, mask, target, 0.7).sum() * scale).backward()
        grads.append(weight.grad.to_dense().clone())
    sparse_embedding_gradients(model, False)
    model.zero_grad(set_to_none=True)
    assert grads[1].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_token_logprob_gradients_equal_a_plain_log_softmax_under_a_restricted_vocabulary(tiny):
    from alignlab.models.forward import hidden_states, output_logits
    from alignlab.models.vocab import VocabularySubset, restrict_vocabulary

    model, tok = tiny
    prompt = tok("Once upon a time")["input_ids"]
    cont = [1000, 2000, 3000]
    ids, mask, target = build_batch([prompt, prompt[:3]], [cont, cont[:2]], tok.pad_token_id)
    keep = set(range(0, 5000)) | set(tok.all_special_ids)
    restrict_vocabulary(model, VocabularySubset(keep, model.config.vocab_size))
    try:
        params = [model.model.layers[0].mlp.up_proj.weight, model.get_output_embeddings().weight]
        got = torch.autograd.grad(token_logprobs(model, ids, mask, target, temperature=0.8).sum(), params)
        hidden, _ = hidden_states(model, ids, mask)
        select = target[:, 1:].bool()
        logits = output_logits(model, hidden[:, :-1][select]).float() / 0.8
        local = model.alignlab_vocabulary.to_local(ids[:, 1:][select])
        want = torch.autograd.grad(torch.log_softmax(logits, -1).gather(1, local[:, None]).sum(), params)
    finally:
        restrict_vocabulary(model, None)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)


def test_a_shared_prefix_runs_once_with_the_same_log_probs_and_gradients(tiny, monkeypatch):
    import alignlab.models.forward as forward

    model, tok = tiny
    prefix = tok("Once upon a time there was a lighthouse keeper who wrote letters every night.")["input_ids"]
    prompts = [prefix + tok(w, add_special_tokens=False)["input_ids"] for w in ("A", "The cat", "Then, at last")]
    ids, mask, target = build_batch(prompts, [[1000, 2000, 3000], [1500], [42, 43]], tok.pad_token_id)
    assert forward.shared_prefix_length(ids, mask) == len(prefix)
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        lp = token_logprobs(model, ids, mask, target)
        return lp, torch.autograd.grad((lp * weights).sum(), params)

    shared, shared_grads = run()
    calls = []
    body = forward.decoder(model)
    hook = body.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                          with_kwargs=True)
    run()
    hook.remove()
    rest = int(mask[:, len(prefix):].sum())
    assert calls == [(1, len(prefix)), (1, rest)]  # the prefix once, then every row's rest packed in one row
    monkeypatch.setattr(forward, "SHARED_PREFIX_MIN", 10**9)
    monkeypatch.setenv("ALIGNLAB_PACKING", "0")
    plain, plain_grads = run()
    assert torch.allclose(shared, plain, atol=1e-5)
    for a, b in zip(shared_grads, plain_grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_rows_that_differ_early_or_are_left_padded_run_as_one_plain_batch(tiny):
    from alignlab.models.forward import shared_prefix_length

    _, tok = tiny
    ids, mask, _ = build_batch([[5] * 30, [5] * 20], [[7], [8]], tok.pad_token_id, padding="left")
    assert shared_prefix_length(ids, mask) == 0  # the shorter row starts with padding
    ids, mask, _ = build_batch([[5] * 30, [6] + [5] * 29], [[7], [8]], tok.pad_token_id)
    assert shared_prefix_length(ids, mask) == 0
    ids, mask, _ = build_batch([[5] * 30, [5] * 30], [[7], [8]], tok.pad_token_id)
    assert shared_prefix_length(ids, mask) == 30
    assert shared_prefix_length(ids, mask, limit=16) == 0  # longer than a sliding window
