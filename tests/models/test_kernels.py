import os
import subprocess
import sys

import pytest
import torch

import alignlab.models.kernels as kernels
from alignlab.models import SampleConfig, sample
from alignlab.models.kernels import MAX_ROWS, few_row_linears, few_rows_matmul, usable

ON = torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX2") and os.environ.get("ALIGNLAB_KERNELS") != "0"


def test_the_kernel_is_built_where_the_cpu_has_avx512():
    # A machine that can run it must get it: a failed build here is a failure, not a silent fallback.
    if ON:
        assert kernels.kernel() is not None, kernels.status()
        assert kernels.status() in ("on (AVX-512)", "on (AVX2)")
    else:
        assert kernels.kernel() is None
        assert kernels.status().startswith("off: ")


needs_kernel = pytest.mark.skipif(not ON, reason="the kernel needs an AVX-512 or AVX2 CPU")


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 8, 9, 15, 16])
@pytest.mark.parametrize("width", [640, 1, 15, 16, 17, 37])
def test_few_rows_matmul_equals_the_matrix_product(rows, width):
    g = torch.Generator().manual_seed(rows * 100 + width)
    weight = torch.randn(1001, width, generator=g)  # an odd row count: the last row runs alone
    x = torch.randn(rows, width, generator=g)
    got = kernels.kernel().few_rows_matmul(x, weight)
    want = (x.double() @ weight.double().T).float()
    assert got.shape == (rows, 1001)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * width ** 0.5)


@needs_kernel
def test_views_and_leading_dimensions():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(300, 80, generator=g)
    weight = big[10:250, 8:72]  # rows contiguous, row stride 80, an offset start
    x = torch.randn(2, 3, 128, generator=g)[:, :, ::2]  # not contiguous
    out = few_rows_matmul(x, weight)
    assert out.shape == (2, 3, 240)
    torch.testing.assert_close(out, x @ weight.T, rtol=1e-5, atol=1e-5)
    assert usable(x, weight)


def test_what_goes_to_the_kernel():
    weight = torch.randn(64, 32)
    assert usable(torch.randn(MAX_ROWS, 32), weight) == ON
    assert not usable(torch.randn(MAX_ROWS + 1, 32), weight)
    assert not usable(torch.randn(0, 32), weight)
    assert not usable(torch.randn(4, 32, dtype=torch.bfloat16), weight.bfloat16())
    assert not usable(torch.randn(4, 32), weight.T.contiguous().T)  # rows not contiguous
    assert not usable(torch.randn(4, 32, requires_grad=True), weight)
    with torch.no_grad():
        assert usable(torch.randn(4, 32, requires_grad=True), weight) == ON
    # Whatever the route, the product is the same.
    x = torch.randn(MAX_ROWS + 1, 32)
    torch.testing.assert_close(few_rows_matmul(x, weight), x @ weight.T)


def test_linear_layers_use_it_inside_the_block_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 7, bias=False))
    x = torch.randn(5, 24)
    plain = model(x)
    with few_row_linears(model):
        patched = all("forward" in layer.__dict__ for layer in (model[0], model[2]))
        with few_row_linears(model):  # nested: still patched after the inner block ends
            inner = model(x)
        still = all("forward" in layer.__dict__ for layer in (model[0], model[2]))
        outer = model(x)
        # gradients still flow (the layers fall back to torch where a gradient is recorded)
        y = torch.randn(3, 24, requires_grad=True)
        model(y).sum().backward()
    assert patched == ON and still == ON
    assert not any("forward" in layer.__dict__ for layer in (model[0], model[2]))
    assert getattr(model, "_alignlab_few_row_blocks", 0) == 0
    torch.testing.assert_close(inner, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outer, plain, rtol=1e-5, atol=1e-6)
    assert y.grad is not None and model[0].weight.grad is not None


def test_sampling_with_and_without_the_kernel_agrees(tiny, monkeypatch):
    model, tok = tiny
    cfg = SampleConfig(max_new_tokens=16, temperature=1.0, seed=3, entropy=True, hidden=True)
    prompts = ["The old lighthouse keeper", "Once upon a time", "Hi", "Hi"]
    with_kernel = sample(model, tok, prompts, cfg)
    monkeypatch.setitem(kernels._STATE, "module", None)
    without = sample(model, tok, prompts, cfg)
    for a, b in zip(with_kernel, without):
        assert a.token_ids == b.token_ids
        for s, t in zip(a.tokens, b.tokens):
            assert s.logprob == pytest.approx(t.logprob, abs=1e-4)
            assert s.entropy == pytest.approx(t.entropy, abs=1e-4)
            torch.testing.assert_close(s.hidden, t.hidden, rtol=1e-4, atol=1e-4)


class Counting:
    """The compiled module, counting its calls by weight shape."""

    def __init__(self, module):
        self.module, self.shapes = module, []

    def few_rows_matmul(self, x, w):
        self.shapes.append((x.shape[0], tuple(w.shape)))
        return self.module.few_rows_matmul(x, w)


@needs_kernel
def test_the_sampler_sends_its_decode_steps_to_the_kernel(tiny, monkeypatch):
    model, tok = tiny
    counting = Counting(kernels.kernel())
    monkeypatch.setitem(kernels._STATE, "module", counting)
    sample(model, tok, ["Once upon a time", "Hi"], SampleConfig(max_new_tokens=6, min_new_tokens=6, seed=0))
    vocab = tuple(model.get_output_embeddings().weight.shape)
    linears = {tuple(m.weight.shape) for m in model.modules() if type(m) is torch.nn.Linear and m.weight is not None}
    assert sum(1 for rows, shape in counting.shapes if shape == vocab and rows == 2) >= 5  # the output layer, per step
    assert {shape for rows, shape in counting.shapes if rows == 2} >= linears - {vocab}  # every body layer
    assert not any("forward" in m.__dict__ for m in model.modules())  # restored after sampling


def test_it_can_be_turned_off():
    code = "from alignlab.models import kernels; print(kernels.status())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ALIGNLAB_KERNELS": "0"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "off: ALIGNLAB_KERNELS=0"


AVX2_CHECK = """
import torch
from alignlab.models import kernels
module = kernels.kernel()
assert module is not None and module.vector_extension() == "AVX2", kernels.status()
g = torch.Generator().manual_seed(1)
for rows in (1, 3, 4, 5, 8, 11):
    for width in (640, 7, 8, 9, 37):
        w, x = torch.randn(999, width, generator=g), torch.randn(rows, width, generator=g)
        want = (x.double() @ w.double().T).float()
        torch.testing.assert_close(module.few_rows_matmul(x, w), want, rtol=1e-5, atol=1e-5 * width ** 0.5)
print("ok")
"""


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="needs an AVX-512 CPU to run both builds")
def test_the_avx2_build_computes_the_same_product():
    # AVX2-only CPUs get the other build; an AVX-512 CPU can run it too, so it is checked here.
    out = subprocess.run([sys.executable, "-c", AVX2_CHECK], env={**os.environ, "ALIGNLAB_KERNEL_ISA": "avx2"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_an_unrunnable_build_is_refused():
    env = {**os.environ, "ALIGNLAB_KERNEL_ISA": "sse9"}
    out = subprocess.run([sys.executable, "-c", "from alignlab.models import kernels; kernels.vector_extension()"],
                         env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "ALIGNLAB_KERNEL_ISA=sse9" in out.stderr
