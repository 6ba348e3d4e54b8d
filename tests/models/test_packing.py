"""Prefix-sharing packing (models/packing.py): the same hidden states and gradients as the plain
padded pass, with each shared prefix and no padding computed."""

import copy

import pytest
import torch

import alignlab.models.forward as forward
from alignlab.models import packing
from alignlab.models.forward import body_hidden_states, decoder
from alignlab.models.packing import plan_packing, sharing_units, supports_packing


def batch(rows, side="right"):
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, cols] = torch.tensor(r)
        mask[i, cols] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def pair_rows(seed=0, template=0, pairs=4):
    """Preference-pair-like rows: [template] + prompt + response, two responses per prompt."""
    g = torch.Generator().manual_seed(seed)

    def tokens(n):
        return torch.randint(10, 5000, (n,), generator=g).tolist()

    head = [2] + tokens(template)
    rows = []
    for _ in range(pairs):
        prompt = tokens(int(torch.randint(4, 12, (1,), generator=g)))
        for _ in range(2):
            rows.append(head + prompt + tokens(int(torch.randint(1, 30, (1,), generator=g))))
    return rows


def plain(body, ids, mask, pos):
    return body(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state


def test_a_plan_holds_each_shared_prefix_once_and_maps_every_token_back():
    rows = pair_rows(pairs=4)
    ids, mask, pos = batch(rows)
    plan = plan_packing(ids, mask, pos)
    distinct = {tuple(r[:k]) for r in rows for k in range(1, len(r) + 1)}  # trie nodes
    real = plan.input_ids.numel() - int((plan.ancestor.sum(-1) == 1).sum()) + 1  # minus padding (the root sees itself)
    assert int(mask.sum()) > len(distinct)
    assert plan.input_ids.flatten()[plan.index][mask.bool()].tolist() == ids[mask.bool()].tolist()
    assert plan.position_ids.flatten()[plan.index][mask.bool()].tolist() == pos[mask.bool()].tolist()
    assert real >= len(distinct)
    assert plan.positions < 0.85 * ids.numel()


def test_the_ancestor_mask_lets_a_token_see_exactly_its_own_rows_earlier_tokens():
    rows = [[2, 7, 8, 9], [2, 7, 8, 10, 11], [2, 5]]
    ids, mask, pos = batch(rows)
    plan = plan_packing(ids, mask, pos, row_tokens=64)
    assert plan is not None and plan.input_ids.shape[0] == 1
    slot = plan.index[0]  # row 0's tokens' slots
    other = plan.index[1]
    flat = plan.ancestor[0]
    assert flat[slot[3]][slot[:4]].all()  # token 9 sees 2, 7, 8 and itself
    assert not flat[slot[3]][other[3]]  # ... not row 1's 10, which shares its position
    assert flat[other[4]][other[:5]].all() and int(flat[other[4]].sum()) == 5


def test_rows_without_padding_or_sharing_are_not_packed():
    ids, mask, pos = batch([[2, 5, 6, 7], [2, 8, 9, 10]])
    assert plan_packing(ids, mask, pos) is None  # nothing to save
    assert plan_packing(ids[:1], mask[:1], pos[:1]) is None  # one row
    _, mask2, _ = batch([[2, 5, 6, 7], [2, 8]])
    odd = pos.clone()
    odd[1] = torch.tensor([0, 3, 4, 5])
    assert plan_packing(ids, mask2, odd) is None  # positions that do not count real tokens


def test_pairs_sharing_a_prompt_form_one_unit():
    rows = pair_rows(pairs=3)
    ids, mask, pos = batch(rows)
    children, paths = {}, []
    for r in rows:
        parent, path = -1, []
        for t in r:
            parent = children.setdefault((parent, t), len(children))
            path.append(parent)
        paths.append(path)
    assert sorted(map(sorted, sharing_units(paths))) == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("template", [0, 20])
@pytest.mark.parametrize("row_tokens", [256, 40])
def test_packed_hidden_states_and_gradients_equal_the_plain_pass(tiny, monkeypatch, side, template, row_tokens):
    model, _ = tiny
    body = decoder(model)
    monkeypatch.setattr(packing, "PACK_ROW_TOKENS", row_tokens)
    ids, mask, pos = batch(pair_rows(seed=1, template=template, pairs=5), side)
    assert plan_packing(ids, mask, pos) is not None
    weights = torch.randn(*ids.shape, body.config.hidden_size, generator=torch.Generator().manual_seed(3))
    params = [p for p in model.parameters() if p.requires_grad]
    real = mask.bool()

    def run(fn):
        hidden = fn()
        return hidden, torch.autograd.grad((hidden * weights * mask[..., None]).sum(), params)

    calls = []
    hook = body.register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    packed, packed_grads = run(lambda: body_hidden_states(body, ids, mask, pos))
    hook.remove()
    assert sum(r * t for r, t in calls) < 0.85 * ids.numel()
    expected, grads = run(lambda: plain(body, ids, mask, pos))
    assert torch.allclose(packed[real], expected[real], atol=1e-5)
    for got, want in zip(packed_grads, grads):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max(), (got - want).abs().max() / want.abs().max()


def test_packing_keeps_the_sliding_window(tiny):
    model, _ = tiny
    small = copy.deepcopy(model)
    body = decoder(small)
    body.config.sliding_window = 6  # shorter than the rows: the sliding layer must not see further back
    ids, mask, pos = batch(pair_rows(seed=2, template=0, pairs=4))
    with torch.no_grad():
        packed = body_hidden_states(body, ids, mask, pos)
        expected = plain(body, ids, mask, pos)
        body.config.sliding_window = 512
        wide = plain(body, ids, mask, pos)
    real = mask.bool()
    assert not torch.allclose(expected[real], wide[real], atol=1e-3)  # the window matters for these rows
    assert torch.allclose(packed[real], expected[real], atol=1e-5)


def test_packing_is_off_where_the_model_or_the_user_says_so(tiny, monkeypatch):
    model, _ = tiny
    body = decoder(model)
    assert supports_packing(body)
    monkeypatch.setenv("ALIGNLAB_PACKING", "0")
    assert not supports_packing(body)
    monkeypatch.delenv("ALIGNLAB_PACKING")
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"
    assert not supports_packing(decoder(eager))
    ids, mask, pos = batch(pair_rows(seed=4, pairs=3))
    calls = []
    hook = decoder(eager).register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)),
                                                    with_kwargs=True)
    with torch.no_grad():
        body_hidden_states(decoder(eager), ids, mask, pos)
    hook.remove()
    assert calls == [tuple(ids.shape)]


def test_a_template_prefix_runs_once_and_the_rest_packed(tiny, monkeypatch):
    model, _ = tiny
    body = decoder(model)
    ids, mask, pos = batch(pair_rows(seed=5, template=30, pairs=4))
    shared = forward.shared_prefix_length(ids, mask)
    assert shared >= 31
    calls = []
    hook = body.register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    with torch.no_grad():
        body_hidden_states(body, ids, mask, pos)
    hook.remove()
    assert calls[0] == (1, shared)
    assert len(calls) == 2 and calls[1][0] * calls[1][1] < int(mask[:, shared:].sum()) + 64
