"""Curvature of any PyTorch model and loss, from Hessian-vector products.

Nothing here forms the Hessian: every routine only asks for products H v, made by double
backward (the gradient is computed once with ``create_graph=True``, then each product is a
backward pass through that gradient). For a loss L(theta) over parameters theta of size n:

- ``hvp``: one product H v, for a loss closure and a list of parameters;
- ``HessianOperator``: the gradient graph built once and reused for many products, averaged
  over batches if given, on flat vectors of length ``dim`` (the operator the routines below take);
- ``top_eigenvalues``: power iteration, largest magnitude first (it can be negative), top-k by
  deflation;
- ``hutchinson_trace`` and ``hutchpp_trace``: trace estimates (Hutch++ needs fewer products for
  the same error when the spectrum decays);
- ``hessian_diagonal``: E[v * Hv] with Rademacher v, per parameter tensor, to find the
  high-curvature parameters;
- ``slq_nodes`` and ``spectral_density``: stochastic Lanczos quadrature (Ghorbani et al. 2019);
- ``stability_ratio`` and ``curvature_summary``: the scalars a training monitor logs
  (``hess/lmax/<block>``, ``hess/trace/<block>``, ``hess/stability/<block>``).

Blocks: every routine runs on whatever parameters its operator holds, so restricting to a block
(``HessianOperator.from_model(model, loss_fn, block="model.layers.3.")`` or ``op.restrict(...)``)
gives the curvature of that diagonal block H_BB of the Hessian: the other parameters are held
fixed, which is what a per-layer learning rate or a per-layer instability sees.

The vectors the routines make and keep (iterates, Lanczos bases, accumulators) are float64 on
the parameters' device whatever the model's dtype: the products themselves run in the model's
dtype, but the dot products, orthogonalisation and averages that turn them into eigenvalues and
traces lose too much in float32 (Lanczos loses orthogonality, deflation leaks the top vector back).
Random vectors come from a CPU generator seeded by ``seed``, so a result is the same on any device.

An operator holds the autograd graph of the loss's gradient at the current parameters: build a
new one after every optimizer step. A kept graph is not always invalidated by an in-place update
(autograd only checks the tensors it saved, and a first layer's weight is often not among them),
so the operator records the parameters' version counters and refuses a product once any changed.
None of this touches ``param.grad``, so the routines can run between ``backward()`` and
``optimizer.step()`` without disturbing training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext

import torch

Block = str | Sequence[str] | Callable[[str], bool]
"""A parameter filter: a name prefix ("model.layers.3."), a list of exact names, or a predicate on the name."""

_VECTOR_DTYPE = torch.float64


# -- Hessian-vector products --------------------------------------------------------------------------

def _twice_differentiable():
    """A context in which scaled_dot_product_attention runs its plain-math kernel.

    The fused attention kernels (flash on CPU, flash and memory-efficient on GPU) have no
    derivative for their backward, so double backward through any model that calls
    F.scaled_dot_product_attention (every Hugging Face model in its default 'sdpa' mode) fails
    with "derivative for ..._backward is not implemented". The math kernel is ordinary autograd
    ops; it is slower and holds the attention matrix, which is the price of second derivatives.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: nothing to switch
        return nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def _gradients(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    """dL/dp for every p, with the graph kept for a second backward (None where L does not depend on p)."""
    if not torch.is_tensor(loss) or loss.dim() != 0:
        shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise ValueError(f"the loss function returned {shape}; it must return a scalar tensor "
                         "(reduce it, e.g. .mean())")
    if not loss.requires_grad:
        # A loss that depends on none of the parameters has a zero Hessian; say so rather than
        # letting autograd raise "element 0 of tensors does not require grad".
        return tuple(None for _ in params)
    return torch.autograd.grad(loss, list(params), create_graph=True, allow_unused=True)


def _hessian_times(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor],
                   vectors: Sequence[torch.Tensor], retain_graph: bool) -> list[torch.Tensor]:
    """H v from gradients made with create_graph=True: the gradient of (g . v) with respect to params.

    Parameters with no gradient path, or whose gradient does not depend on any parameter (the
    loss is linear in them), have a zero row in H; they are left out of the backward pass and
    their blocks come back as zeros (autograd would otherwise raise or return None).
    """
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not live:
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad([grads[i] for i in live], list(params),
                             grad_outputs=[vectors[i].to(grads[i].dtype) for i in live],
                             retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for p, h in zip(params, hv)]


def hvp(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
        vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Hessian-vector product H v of the scalar ``loss_fn()`` with respect to ``params``.

    ``vectors`` has one tensor per parameter, of its shape; the result likewise (in the
    parameters' dtype). Runs one forward, one backward with create_graph and one backward through
    the gradient: for many products at the same point, build a ``HessianOperator`` instead.
    """
    params = list(params)
    if len(vectors) != len(params):
        raise ValueError(f"hvp got {len(vectors)} vectors for {len(params)} parameters; give one per parameter")
    for i, (p, v) in enumerate(zip(params, vectors)):
        if p.shape != v.shape:
            raise ValueError(f"hvp: vector {i} has shape {tuple(v.shape)}, its parameter {tuple(p.shape)}")
    with _twice_differentiable():
        loss = loss_fn()
    return _hessian_times(_gradients(loss, params), params, vectors, retain_graph=False)


def _matcher(block: Block) -> Callable[[str], bool]:
    if callable(block):
        return block
    if isinstance(block, str):
        return lambda name: name.startswith(block)
    names = set(block)
    return lambda name: name in names


def select_parameters(named: Iterable[tuple[str, torch.Tensor]], block: Block | None = None
                      ) -> tuple[list[str], list[torch.Tensor]]:
    """The trainable (requires_grad) parameters whose name matches ``block`` (all of them if None)."""
    named = [(n, p) for n, p in named if p.requires_grad]
    if block is None:
        chosen = named
    else:
        if not callable(block) and not isinstance(block, str):
            unknown = sorted(set(block) - {n for n, _ in named})
            if unknown:
                raise ValueError(f"block names {unknown[:5]} are not trainable parameters of the model; "
                                 f"names look like {[n for n, _ in named[:3]]}")
        keep = _matcher(block)
        chosen = [(n, p) for n, p in named if keep(n)]
    if not chosen:
        raise ValueError(f"block {block!r} matches no trainable parameter; names look like "
                         f"{[n for n, _ in named[:3]]} (a prefix such as 'model.layers.0.' selects a layer)")
    return [n for n, _ in chosen], [p for _, p in chosen]


class HessianOperator:
    """The Hessian of a loss at the current parameters, as a linear operator on flat vectors.

    ``loss_fn()`` (or ``loss_fn(batch)`` for each of ``batches``) runs the forward pass and returns
    a scalar. The operator is the average of the batches' Hessians, which is the Hessian of the
    mean loss when the batches are equally weighted.

    keep_graph=True (default) runs the forward and the first backward once per batch, here, and
    keeps their graphs (retain_graph) so that each product is one backward per batch: memory is
    that of every batch's double-backward graph at once. keep_graph=False recomputes forward and
    gradient for every product, batch by batch, holding one batch's graph at a time (PyHessian's
    data-loader mode): about twice the time per product for a fraction of the memory.

    Attributes: ``dim`` (number of scalars), ``names``, ``params``, ``products`` (matvecs made so
    far), ``loss`` (mean loss at build time; None with keep_graph=False).
    """

    def __init__(self, loss_fn: Callable[..., torch.Tensor], params: Sequence[torch.Tensor],
                 batches: Sequence | None = None, *, names: Sequence[str] | None = None, keep_graph: bool = True):
        self.params = list(params)
        if not self.params:
            raise ValueError("HessianOperator needs at least one parameter")
        self.names = list(names) if names is not None else [f"param{i}" for i in range(len(self.params))]
        if len(self.names) != len(self.params):
            raise ValueError(f"{len(self.names)} names for {len(self.params)} parameters")
        if batches is not None and len(batches) == 0:
            raise ValueError("batches is empty; give at least one batch, or None to call loss_fn() without one")
        self.dim = sum(p.numel() for p in self.params)
        self.device = self.params[0].device
        self.products = 0
        self.loss: float | None = None
        self._loss_fn, self._batches, self._keep_graph = loss_fn, batches, keep_graph
        self._graphs: list[tuple] = []
        self._versions = [p._version for p in self.params]
        if keep_graph:
            losses = []
            for batch in self._each_batch():
                loss = self._loss(batch)
                losses.append(float(loss.detach()))
                self._graphs.append(_gradients(loss, self.params))
            self.loss = sum(losses) / len(losses)

    @classmethod
    def from_model(cls, model: torch.nn.Module, loss_fn: Callable[..., torch.Tensor], block: Block | None = None,
                   batches: Sequence | None = None, keep_graph: bool = True) -> HessianOperator:
        """The operator over ``model``'s trainable parameters, or the block of them ``block`` selects."""
        names, params = select_parameters(model.named_parameters(), block)
        return cls(loss_fn, params, batches, names=names, keep_graph=keep_graph)

    def restrict(self, block: Block) -> HessianOperator:
        """The operator on the diagonal block H_BB of the parameters ``block`` selects.

        With keep_graph the block reuses this operator's gradient graph (no new forward): its
        products are backward passes from the block's gradients to the block's parameters only.
        """
        names, params = select_parameters(zip(self.names, self.params), block)
        index = {n: i for i, n in enumerate(self.names)}
        keep = [index[n] for n in names]
        sub = object.__new__(HessianOperator)
        sub.params, sub.names = params, names
        sub.dim = sum(p.numel() for p in params)
        sub.device, sub.products, sub.loss = self.device, 0, self.loss
        sub._loss_fn, sub._batches, sub._keep_graph = self._loss_fn, self._batches, self._keep_graph
        sub._graphs = [tuple(g[i] for i in keep) for g in self._graphs]
        sub._versions = [self._versions[i] for i in keep]
        return sub

    def _each_batch(self) -> list:
        return [None] if self._batches is None else list(self._batches)

    def _loss(self, batch) -> torch.Tensor:
        with _twice_differentiable():
            return self._loss_fn() if self._batches is None else self._loss_fn(batch)

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """One tensor per parameter -> a flat float64 vector (dim,)."""
        return torch.cat([t.reshape(-1).to(_VECTOR_DTYPE) for t in tensors])

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """A flat vector (dim,) -> one tensor per parameter, of its shape (in the vector's dtype)."""
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a flat vector of shape ({self.dim},), got {tuple(vector.shape)}")
        return [piece.view_as(p) for piece, p in zip(vector.split([p.numel() for p in self.params]), self.params)]

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector (dim,); returns (dim,) in float64 (the product runs in the parameters' dtype)."""
        pieces = [piece.to(p.dtype) for piece, p in zip(self.unflatten(vector.to(self.device)), self.params)]
        total = torch.zeros(self.dim, dtype=_VECTOR_DTYPE, device=self.device)
        if self._keep_graph:
            changed = [n for n, p, seen in zip(self.names, self.params, self._versions) if p._version != seen]
            if changed:
                raise RuntimeError(f"parameters {changed[:3]} changed in place (an optimizer step?) since this "
                                   "HessianOperator was built; its graph is of the old weights: build a new one")
            for grads in self._graphs:
                total += self.flatten(_hessian_times(grads, self.params, pieces, retain_graph=True))
            count = len(self._graphs)
        else:
            batches = self._each_batch()
            for batch in batches:
                grads = _gradients(self._loss(batch), self.params)
                total += self.flatten(_hessian_times(grads, self.params, pieces, retain_graph=False))
            count = len(batches)
        self.products += 1
        return total / count

    def dense(self) -> torch.Tensor:
        """The whole Hessian (dim, dim) in float64, column by column: for tests and very small models only."""
        eye = torch.eye(self.dim, dtype=_VECTOR_DTYPE, device=self.device)
        return torch.stack([self.matvec(eye[i]) for i in range(self.dim)], dim=1)


# -- random vectors -------------------------------------------------------------------------------------

def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rademacher(shape: tuple[int, ...], gen: torch.Generator, device) -> torch.Tensor:
    """Entries +1 or -1 with equal probability, float64: E[v v^T] = I with the smallest variance
    for trace and diagonal estimates (Gaussian vectors add the variance of v_i^2)."""
    return (torch.randint(0, 2, shape, generator=gen).to(_VECTOR_DTYPE) * 2 - 1).to(device)


def _orthogonalise(v: torch.Tensor, basis: Sequence[torch.Tensor]) -> torch.Tensor:
    # Twice ("twice is enough", Kahan/Parlett): one pass leaves round-off of the size of the
    # removed components, which power iteration would then amplify back into the found direction.
    for _ in range(2):
        for b in basis:
            v = v - (b @ v) * b
    return v


# -- eigenvalues --------------------------------------------------------------------------------------

def top_eigenvalues(op: HessianOperator, k: int = 1, max_iter: int = 100, tol: float = 1e-3, seed: int = 0
                    ) -> tuple[list[float], list[torch.Tensor], list[int]]:
    """The ``k`` eigenvalues of largest magnitude by power iteration with deflation.

    Returns (eigenvalues, eigenvectors, iterations): eigenvalues in the order found (decreasing
    magnitude, signs kept: a negative one is a direction of negative curvature), eigenvectors as
    unit flat float64 vectors (dim,) (``op.unflatten`` gives them per parameter), and the products
    each eigenvalue took. Iteration stops when the Rayleigh quotient's relative change is below
    ``tol`` (PyHessian's rule); an eigenvalue that used all ``max_iter`` has not converged,
    typically because the next eigenvalue has nearly the same magnitude (or the opposite sign:
    power iteration cannot separate lambda from -lambda). The error of the eigenvalue after
    stopping is about tol times |lambda1| / (|lambda1| - |lambda2|), so pass a smaller tol when the
    top of the spectrum is crowded. Each later eigenvalue is found in the orthogonal complement of
    the earlier eigenvectors (deflation), so a repeated eigenvalue comes back as often as it repeats.
    """
    if not 1 <= k <= op.dim:
        raise ValueError(f"k={k}: ask for between 1 and {op.dim} eigenvalues (the operator's dimension)")
    gen = _generator(seed)
    values: list[float] = []
    vectors: list[torch.Tensor] = []
    iterations: list[int] = []
    for _ in range(k):
        v = _orthogonalise(torch.randn(op.dim, generator=gen, dtype=_VECTOR_DTYPE).to(op.device), vectors)
        v = v / v.norm()
        value, steps = 0.0, 0
        for steps in range(1, max_iter + 1):
            hv = _orthogonalise(op.matvec(v), vectors)
            new = float(v @ hv)  # the Rayleigh quotient of the unit vector v
            norm = hv.norm()
            if float(norm) == 0.0:  # v lies in the null space: the rest of the spectrum is zero
                value = 0.0
                break
            v = hv / norm
            converged = steps > 1 and abs(new - value) <= tol * abs(value)
            value = new
            if converged:
                break
        values.append(value)
        vectors.append(v)
        iterations.append(steps)
    return values, vectors, iterations


def stability_ratio(lambda_max: float, lr: float) -> float:
    """lambda_max * lr / 2: above 1, plain gradient descent with step ``lr`` diverges along the top eigenvector.

    On a quadratic, a GD step multiplies the component along an eigenvector of eigenvalue lambda by
    (1 - lr * lambda), whose magnitude exceeds 1 once lr * lambda > 2. The ratio is reported
    against 1 (not lr * lambda against 2) so that every block's value reads the same way; it keeps
    lambda's sign, so a negative ratio is negative curvature (a saddle direction GD moves away
    from), not oscillation. For heavy-ball momentum beta the threshold is 1 + beta; for Adam the
    relevant quantity is the preconditioned Hessian's, which this does not compute.
    """
    return lambda_max * lr / 2


# -- trace and diagonal -------------------------------------------------------------------------------

def hutchinson_trace(op: HessianOperator, samples: int = 64, min_samples: int = 10, rtol: float | None = None,
                     seed: int = 0) -> tuple[float, float, torch.Tensor]:
    """Hutchinson's estimate of tr(H) as the mean of v^T H v over Rademacher vectors v.

    Returns (estimate, standard_error, per_sample_values) with per_sample_values (n,) float64 and
    standard_error = std(values) / sqrt(n). With ``rtol``, sampling stops early once the standard
    error is below rtol * |estimate|, but never before ``min_samples``: a standard error from a
    handful of samples is itself too noisy to stop on (PyHessian stops on the change of the mean,
    which can end after two samples that happen to agree).
    """
    if min_samples < 2:
        raise ValueError(f"min_samples={min_samples}: a standard error needs at least 2 samples")
    if samples < min_samples:
        raise ValueError(f"samples={samples} is below min_samples={min_samples}; a Hutchinson estimate from fewer "
                         "samples has an untrustworthy standard error: raise samples")
    gen = _generator(seed)
    values: list[float] = []
    for n in range(1, samples + 1):
        v = _rademacher((op.dim,), gen, op.device)
        values.append(float(v @ op.matvec(v)))
        if rtol is not None and n >= min_samples:
            t = torch.tensor(values, dtype=_VECTOR_DTYPE)
            if float(t.std()) / math.sqrt(n) <= rtol * abs(float(t.mean())):
                break
    t = torch.tensor(values, dtype=_VECTOR_DTYPE)
    return float(t.mean()), float(t.std()) / math.sqrt(len(t)), t


def hutchpp_trace(op: HessianOperator, matvecs: int = 96, seed: int = 0) -> float:
    """Hutch++ (Meyer, Musco, Musco and Woodruff 2021): tr(H) from about ``matvecs`` products.

    A third of the products sketch the top of the spectrum (Q = orth(H S), S Rademacher (dim, m/3)),
    whose trace tr(Q^T H Q) is computed exactly with another third; the last third runs Hutchinson
    on the rest, (I - QQ^T) H (I - QQ^T). The error then falls as 1/m rather than 1/sqrt(m) when
    the spectrum decays. Exact (up to round-off) when m/3 >= rank(H): then Q spans H's range and
    the remainder is zero; in particular whenever m >= 3 * dim, in which case only 2 * dim products
    are made. Holds m/3 vectors of length dim at once.
    """
    k = matvecs // 3
    if k < 1:
        raise ValueError(f"matvecs={matvecs}: Hutch++ needs at least 3 (a third each to sketch, project and sample)")
    gen = _generator(seed)
    width = min(k, op.dim)
    sketch = _rademacher((op.dim, width), gen, op.device)
    q, _ = torch.linalg.qr(torch.stack([op.matvec(sketch[:, j]) for j in range(width)], dim=1))  # (dim, width)
    top = sum(float(q[:, j] @ op.matvec(q[:, j])) for j in range(width))
    if width == op.dim:  # Q is a full orthogonal basis: nothing is left for the Hutchinson part
        return top
    g = _rademacher((op.dim, k), gen, op.device)
    g = g - q @ (q.T @ g)  # (dim, k): the probes with the sketched directions removed
    rest = sum(float(g[:, j] @ op.matvec(g[:, j])) for j in range(k)) / k
    return top + rest


def hessian_diagonal(op: HessianOperator, samples: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """The diagonal of H, estimated as the mean of v * Hv over Rademacher v, per parameter tensor.

    Returns {name: tensor of that parameter's shape, float64}. E[v_i (Hv)_i] = sum_j H_ij E[v_i v_j]
    = H_ii; the variance of entry i is sum_{j != i} H_ij^2 / samples, so the estimate is exact for
    a diagonal H and noisy where a parameter is strongly coupled to others. To locate high-curvature
    parameters, compare the entries' magnitudes (``abs().max()`` or ``abs().mean()`` per tensor).
    """
    if samples < 1:
        raise ValueError(f"samples={samples}: the diagonal estimate needs at least one sample")
    gen = _generator(seed)
    total = torch.zeros(op.dim, dtype=_VECTOR_DTYPE, device=op.device)
    for _ in range(samples):
        v = _rademacher((op.dim,), gen, op.device)
        total += v * op.matvec(v)
    return dict(zip(op.names, op.unflatten(total / samples)))


# -- spectral density ---------------------------------------------------------------------------------

def lanczos(op: HessianOperator, steps: int, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` steps of Lanczos from ``start`` (dim,), with full reorthogonalisation.

    Returns the tridiagonal matrix's diagonal alphas (m,) and off-diagonal betas (m - 1,), float64,
    with m <= steps: the iteration stops early when it finds an invariant subspace (beta ~ 0), as it
    must after at most dim steps. Full reorthogonalisation (against every earlier basis vector, twice)
    because plain Lanczos loses orthogonality as Ritz values converge and then produces spurious
    copies of them ("ghosts"), which would show up as extra mass in the density; it costs holding
    the (m, dim) basis.
    """
    steps = min(steps, op.dim)
    basis = torch.zeros(steps, op.dim, dtype=_VECTOR_DTYPE, device=op.device)
    alphas, betas = [], []
    v = start.to(op.device, _VECTOR_DTYPE)
    v = v / v.norm()
    scale = 0.0
    for j in range(steps):
        basis[j] = v
        w = op.matvec(v)
        alpha = float(v @ w)
        alphas.append(alpha)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(w.norm())
        scale = max(scale, abs(alpha), beta)
        if j == steps - 1 or beta <= 1e-10 * scale:
            break
        betas.append(beta)
        v = w / beta
    return torch.tensor(alphas, dtype=_VECTOR_DTYPE), torch.tensor(betas, dtype=_VECTOR_DTYPE)


def slq_nodes(op: HessianOperator, lanczos_steps: int = 64, runs: int = 4, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic Lanczos quadrature: the nodes and weights of the Hessian's spectral measure.

    For each run, Lanczos from a normalised Rademacher vector v gives the tridiagonal T; its
    eigenvalues (Ritz values) are the nodes and the squared first components of its eigenvectors
    the weights, so that sum_i w_i f(theta_i) ~ v^T f(H) v ~ tr f(H) / dim. Returns the runs'
    nodes and weights concatenated (R,), float64, the weights divided by ``runs`` so that they sum
    to 1. The weighted mean of the nodes is exactly the mean over runs of v^T H v, an estimate of
    tr(H) / dim. Costs runs * lanczos_steps products (fewer when dim is small).
    """
    if lanczos_steps < 1 or runs < 1:
        raise ValueError(f"lanczos_steps={lanczos_steps}, runs={runs}: both must be at least 1")
    gen = _generator(seed)
    nodes, weights = [], []
    for _ in range(runs):
        alphas, betas = lanczos(op, lanczos_steps, _rademacher((op.dim,), gen, op.device))
        tridiagonal = torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)
        ritz, vectors = torch.linalg.eigh(tridiagonal)
        nodes.append(ritz)
        weights.append(vectors[0] ** 2 / runs)
    return torch.cat(nodes), torch.cat(weights)


def spectral_density(op: HessianOperator, lanczos_steps: int = 64, runs: int = 4,
                     grid: int | torch.Tensor = 1000, sigma: float | None = None, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature, broadened by Gaussians.

    density(t) = sum_i w_i N(t; theta_i, sigma^2) over the nodes of ``slq_nodes``. ``grid`` is a
    number of evenly spaced points from min(theta) - 5 sigma to max(theta) + 5 sigma, or the points
    themselves (G,). ``sigma`` defaults to 1% of the nodes' spread (of max(|theta|, 1) if they all
    coincide): narrow enough to separate the outliers a loss Hessian has, wide enough to smooth the
    bulk. Returns (grid (G,), density (G,)), float64; the density integrates to 1 over a grid that
    covers the nodes with some sigma to spare, and its mean is the nodes' weighted mean (tr(H)/dim,
    estimated).
    """
    nodes, weights = slq_nodes(op, lanczos_steps, runs, seed)
    nodes, weights = nodes.cpu(), weights.cpu()
    low, high = float(nodes.min()), float(nodes.max())
    if sigma is None:
        spread = high - low
        sigma = 0.01 * (spread if spread > 0 else max(abs(high), 1.0))
    if sigma <= 0:
        raise ValueError(f"sigma={sigma}: the broadening must be positive")
    if isinstance(grid, int):
        points = torch.linspace(low - 5 * sigma, high + 5 * sigma, grid, dtype=_VECTOR_DTYPE)
    else:
        points = torch.as_tensor(grid, dtype=_VECTOR_DTYPE).cpu()
    gauss = torch.exp(-0.5 * ((points[:, None] - nodes[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return points, gauss @ weights  # (G, R) @ (R,)


# -- what a monitor logs ------------------------------------------------------------------------------

def layer_blocks(model: torch.nn.Module) -> dict[str, str]:
    """{"model.layers.0": "model.layers.0.", ...}: one block per numbered layer of a stacked model."""
    found: dict[str, str] = {}
    for name, p in model.named_parameters():
        match = re.match(r"^(.*?\.?layers\.\d+)\.", name)
        if match and p.requires_grad:
            found.setdefault(match.group(1), match.group(1) + ".")
    return found


def _named_blocks(blocks: dict[str, Block] | Sequence[str] | None) -> dict[str, Block]:
    if blocks is None:
        return {}
    if isinstance(blocks, dict):
        return dict(blocks)
    if isinstance(blocks, str):
        raise TypeError(f"blocks={blocks!r}: give a list of prefixes ([{blocks!r}]) or a dict of name -> filter")
    return {prefix.rstrip("."): prefix for prefix in blocks}


def curvature_summary(model: torch.nn.Module, loss_fn: Callable[..., torch.Tensor],
                      blocks: dict[str, Block] | Sequence[str] | None = None, k: int = 1, trace_samples: int = 32,
                      lr: float | None = None, batches: Sequence | None = None, max_iter: int = 100,
                      tol: float = 1e-3, seed: int = 0) -> dict[str, float]:
    """Curvature scalars for the whole model and for each block, as metrics to log.

    ``blocks``: a list of name prefixes (the metric key is the prefix without its final dot) or a
    dict {key: Block}; ``layer_blocks(model)`` gives one per layer. For each group ("all" and each
    block) the keys are hess/lmax/<group> (the eigenvalue of largest magnitude, signed),
    hess/eig<j>/<group> for j = 2..k, hess/trace/<group> and hess/trace_se/<group> (Hutchinson with
    ``trace_samples`` samples; 0 skips the trace), hess/stability/<group> (``stability_ratio``: above
    1 is unstable for plain GD) when ``lr`` is given, and hess/iters/<group> (products the top
    eigenvalue took). Also hess/loss and hess/matvecs (the products spent in all). The gradient
    graph is built once and shared by the blocks.
    """
    op = HessianOperator.from_model(model, loss_fn, batches=batches)
    groups = {"all": op}
    for key, block in _named_blocks(blocks).items():
        groups[key] = op.restrict(block)
    out: dict[str, float] = {"hess/loss": float(op.loss)}
    for key, group in groups.items():
        values, _, iterations = top_eigenvalues(group, k=min(k, group.dim), max_iter=max_iter, tol=tol, seed=seed)
        out[f"hess/lmax/{key}"] = values[0]
        out[f"hess/iters/{key}"] = float(iterations[0])
        for j, value in enumerate(values[1:], start=2):
            out[f"hess/eig{j}/{key}"] = value
        if trace_samples:
            estimate, error, _ = hutchinson_trace(group, samples=trace_samples,
                                                  min_samples=min(10, trace_samples), seed=seed)
            out[f"hess/trace/{key}"] = estimate
            out[f"hess/trace_se/{key}"] = error
        if lr is not None:
            out[f"hess/stability/{key}"] = stability_ratio(values[0], lr)
    out["hess/matvecs"] = float(sum(g.products for g in groups.values()))
    return out
