"""Row-sparse gradients for the 262k-row embedding (train/loop.py): the optimizer, clipping and the
policies' tied or vocabulary-restricted output layer give what the dense computation gives."""

import copy

import pytest
import torch

from alignlab.models import token_logprobs
from alignlab.models.scoring import build_batch
from alignlab.models.vocab import VocabularySubset, restrict_vocabulary
from alignlab.train.loop import AdamW, sparse_embedding_gradients


def test_row_sparse_adamw_equals_dense_adamw_with_and_without_weight_decay(tmp_path):
    for decay in (0.0, 0.1):
        torch.manual_seed(0)
        dense = torch.nn.Embedding(60, 5)
        sparse = torch.nn.Embedding(60, 5, sparse=True)
        sparse.weight.data.copy_(dense.weight.data)
        reference = torch.optim.AdamW(dense.parameters(), lr=0.05, weight_decay=decay)
        ours = AdamW(sparse.parameters(), lr=0.05, weight_decay=decay)
        for step in range(8):
            rows = torch.randint(0, 10 + 5 * step, (9,))  # rows repeat within a batch, new rows join later
            for module, optimizer in ((dense, reference), (sparse, ours)):
                (module(rows) ** 2).sum().backward()
                optimizer.step()
                optimizer.zero_grad()
            if step == 3:  # a checkpoint round trip in the middle
                torch.save(ours.state_dict(), tmp_path / "opt.pt")
                ours = AdamW(sparse.parameters(), lr=0.05, weight_decay=decay)
                ours.load_state_dict(torch.load(tmp_path / "opt.pt"))
        assert torch.allclose(dense.weight, sparse.weight, atol=1e-6), decay
        assert not torch.equal(dense.weight[59], sparse.weight[59] + 1)  # the comparison is not vacuous
        assert int(ours.state[sparse.weight]["touched"].sum()) < 60


def test_clipping_sees_a_sparse_gradient_as_its_dense_equal():
    from alignlab.train.hooks import StepContext
    from alignlab.train.loop import clip_gradients_before_hooks
    from alignlab.train.hooks import Hooks

    grads = {}
    for sparse in (False, True):
        torch.manual_seed(0)
        module = torch.nn.Embedding(30, 4, sparse=sparse)
        (module(torch.tensor([1, 1, 5, 7])) ** 2).sum().backward()
        ctx = StepContext(1, module, torch.tensor(0.0), AdamW(module.parameters(), lr=0.1), {"w": module.weight})
        norm, clipped = clip_gradients_before_hooks(ctx, 0.5, Hooks())
        grads[sparse] = (norm, clipped, module.weight.grad.to_dense())
    assert grads[True][0] == pytest.approx(grads[False][0]) and grads[True][1] and grads[False][1]
    assert torch.allclose(grads[True][2], grads[False][2])
    assert float(grads[True][2].norm()) == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("restricted", [False, True])
def test_policy_steps_with_a_sparse_embedding_equal_dense_ones(tiny, restricted):
    base, tok = tiny
    prompts = [tok("Once upon a time")["input_ids"], tok("The sea")["input_ids"]]
    ids, mask, target = build_batch(prompts, [[1000, 2000, 3000], [1500, 42]], tok.pad_token_id)
    weights = {}
    for sparse in (False, True):
        model = copy.deepcopy(base)
        if restricted:
            restrict_vocabulary(model, VocabularySubset(set(range(5000)) | set(tok.all_special_ids),
                                                        model.config.vocab_size))
        assert sparse_embedding_gradients(model, enable=sparse) == sparse
        optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3):
            token_logprobs(model, ids, mask, target).sum().neg().backward()
            grad = model.get_input_embeddings().weight.grad
            assert grad.is_sparse == (sparse and restricted)  # tied to a full output layer: dense in the end
            optimizer.step()
            optimizer.zero_grad()
        weights[sparse] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, value in weights[False].items():
        assert torch.allclose(weights[True][name], value, atol=1e-6), name
    embedding = "model.embed_tokens.weight"
    assert not torch.equal(weights[True][embedding], dict(base.named_parameters())[embedding])


def test_a_frozen_embedding_stays_dense(tiny):
    model = copy.deepcopy(tiny[0])
    model.get_input_embeddings().weight.requires_grad_(False)
    assert not sparse_embedding_gradients(model)
    assert not model.get_input_embeddings().sparse


def test_keeping_freed_memory_takes_effect_on_linux_and_allocation_still_works():
    import sys

    from alignlab.train.loop import keep_freed_memory

    assert keep_freed_memory() is sys.platform.startswith("linux")
    blocks = [torch.ones(64 * 2**20 // 4) for _ in range(3)]  # 64 MB each: past glibc's mmap threshold
    del blocks
    again = torch.zeros(64 * 2**20 // 4)
    assert float(again.sum()) == 0.0
