"""The blocked-gradient audit: the places where a loss can influence parameters, or parameters
the loss, without gradient descent assigning credit through them.

Four checks, reported together (docs/whitebox.md describes each):

1. reachability: walk the autograd graph back from the loss; a trainable parameter it never
   reaches gets no gradient at all. Beside it, parameters whose gradient is None or exactly
   zero on most batches (``GradientPresence``, fed from real training steps).
2. runtime: while the loss is computed, every operation whose input requires grad and whose
   output does not (detach, argmax or sort indices, comparisons, integer casts, sampling, a
   no_grad region inside a differentiable pass) or whose derivative is zero everywhere
   (rounding, sign), with the module it ran in and the line that called it; host round-trips
   (.item(), .tolist(), bool()) on tensors that carry gradient; custom autograd Functions whose
   backward gives no gradient (None or zeros) to an input that needs one; registered gradient
   hooks on parameters and modules (they can rescale or zero gradients).
3. static: modules that torch.fx can trace are scanned for non-differentiable targets and the
   straight-through pattern ``x + (g(x) - x).detach()``. Hugging Face decoder layers do not
   trace (data-dependent control flow); the runtime record covers them.
4. sensitivity: for a few parameter tensors and a random unit direction, the central finite
   difference of the loss against the autograd directional derivative. A mismatch means an
   influence gradients cannot see (or curvature too sharp for the step).

Every check returns ``Finding``s; monitors.py turns them into red flags with the step they were
first seen. A few gradient routes are alignlab's own and exact (``KNOWN_ROUTES``): they are
listed in the report as known, not flagged.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

LossFn = Callable[[], torch.Tensor]


@dataclass
class Finding:
    """One thing a check saw."""

    check: str
    """unreachable, zero-gradient, gradient-dropping-op, zero-derivative-op, no-grad-region,
    host-round-trip, custom-backward, gradient-hook, straight-through, sensitivity."""
    where: str
    """The parameter or module it concerns."""
    what: str
    """What was seen, in words a reader can act on."""
    known: str = ""
    """Why this is one of alignlab's own exact routes (then it is reported, not flagged)."""


KNOWN_ROUTES = {
    ("alignlab/models/scoring.py", "target_logprobs"):
        "the tied output layer's dense gradient is written straight into weight.grad beside the "
        "embedding's sparse rows (models/scoring.py OutputTargetLogProbs); exact, tested equal to autograd",
}
"""(file suffix, function) call sites whose gradient-dropping operation is a deliberate, tested route."""

ZERO_ON_ONE_BATCH = ("zero on one batch only; flagged when it persists over training steps or the "
                     "finite-difference check disagrees")
OUTSIDE = "(outside the model)"
OUTSIDE_REASON = ("in the training objective, outside the model's modules (e.g. KTO's detached KL baseline, "
                  "a loss's statistics): the objective's own definition; the model's parameters are audited "
                  "by reachability and sensitivity")

# Functions whose outputs carry no gradient by construction.
DROPPING = {"detach", "detach_", "argmax", "argmin", "argsort", "multinomial", "bernoulli", "bernoulli_",
            "one_hot", "searchsorted", "bucketize", "nonzero", "eq", "ne", "lt", "le", "gt", "ge",
            "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "isclose", "isnan", "isinf",
            "long", "int", "bool", "short", "byte", "char", "to", "type", "sort", "topk", "max", "min",
            "kthvalue", "mode", "median", "unique", "randint_like", "rand_like", "randn_like", "numpy"}
# Differentiable in name only: their derivative is zero almost everywhere.
ZERO_DERIVATIVE = {"round", "round_", "floor", "floor_", "ceil", "ceil_", "sign", "sign_", "trunc", "trunc_",
                   "fix", "heaviside", "sgn"}
HOST = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"}
# Torch-internal accessors that never move values: not worth recording.
_IGNORED = {"__get__", "__set__", "size", "dim", "numel", "shape", "dtype", "device", "is_floating_point",
            "requires_grad_", "__len__", "__repr__", "__format__", "__hash__", "data_ptr", "stride",
            "is_contiguous", "element_size", "storage_offset", "__setstate__", "__reduce_ex__", "grad_fn",
            "_is_view", "is_complex", "untyped_storage", "__contains__"}


def _name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name.rsplit(".", 1)[-1]


def _tensors(obj) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _call_site() -> tuple[str, str, int]:
    """(file, function, line) of the first frame outside torch and this file: who called the op."""
    frame = sys._getframe(2)
    here = os.path.abspath(__file__)
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if path != here and not path.startswith(torch_dir):
            return path, frame.f_code.co_name, frame.f_lineno
        frame = frame.f_back
    return "?", "?", 0


def _known(path: str, function: str) -> str:
    path = path.replace(os.sep, "/")
    for (suffix, name), why in KNOWN_ROUTES.items():
        if path.endswith(suffix) and function == name:
            return why
    return ""


class OpRecorder(TorchFunctionMode):
    """Records gradient-dropping operations while active, attributed to the innermost module of
    ``model`` that is running (forward hooks keep the stack)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.stack: list[str] = []
        self.events: dict[tuple[str, str, str], dict] = {}
        self._handles = []
        self._outer_grad = True

    def __enter__(self):
        names = {id(m): n or type(m).__name__ for n, m in self.model.named_modules()}

        def push(module, args):
            if id(module) in names:
                self.stack.append(names[id(module)])

        def pop(module, args, output):
            if id(module) in names and self.stack:
                self.stack.pop()

        self._handles = [torch.nn.modules.module.register_module_forward_pre_hook(push),
                         torch.nn.modules.module.register_module_forward_hook(pop, always_call=True)]
        self._outer_grad = torch.is_grad_enabled()
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return super().__exit__(*exc)

    def _record(self, check: str, op: str, detail: str) -> None:
        path, function, line = _call_site()
        module = self.stack[-1] if self.stack else OUTSIDE
        key = (check, module, op)
        event = self.events.get(key)
        if event is None:
            known = _known(path, function) or (OUTSIDE_REASON if module == OUTSIDE else "")
            self.events[key] = {"check": check, "module": module, "op": op, "detail": detail, "count": 1,
                                "site": f"{path}:{line} ({function})", "known": known}
        else:
            event["count"] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        if name == "__get__" and getattr(getattr(func, "__self__", None), "__name__", "") == "data":
            name = ".data"  # the attribute that reads a tensor's values around autograd
        elif name in _IGNORED:
            return func(*args, **kwargs)
        inputs = [t for t in _tensors((args, kwargs)) if t.requires_grad]
        out = func(*args, **kwargs)
        if not inputs or not self._outer_grad:
            return out
        if name in HOST:
            self._record("host-round-trip", name, f".{name}() moved a tensor that carries gradient to Python")
            return out
        if not torch.is_grad_enabled():
            self._record("no-grad-region", name, f"{name} ran with gradients disabled on an input that requires grad")
            return out
        outs = list(_tensors(out))
        if name in ZERO_DERIVATIVE:
            self._record("zero-derivative-op", name, f"{name} has zero derivative almost everywhere")
        elif outs and not any(t.requires_grad for t in outs) and any(t.is_floating_point() or name in DROPPING
                                                                     for t in inputs):
            kinds = sorted({str(t.dtype).replace("torch.", "") for t in outs})
            self._record("gradient-dropping-op", name, f"{name} returned {'/'.join(kinds)} without gradient")
        return out


def reachable_parameters(loss: torch.Tensor) -> set[int]:
    """ids of the leaf tensors the autograd graph of ``loss`` reaches."""
    seen, found, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            found.add(id(variable))
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def custom_functions(loss: torch.Tensor) -> list:
    """The backward nodes of custom autograd Functions in the graph of ``loss``."""
    seen, found, stack = set(), [], [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "_forward_cls"):
            found.append(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def registered_hooks(model: torch.nn.Module, parameters: dict[str, torch.nn.Parameter]) -> list[Finding]:
    """Gradient hooks on parameters, on modules, and global module backward hooks."""
    findings = []
    for name, p in parameters.items():
        for kind in ("_backward_hooks", "_post_accumulate_grad_hooks"):
            hooks = getattr(p, kind, None) or {}
            for hook in hooks.values():
                findings.append(Finding("gradient-hook", name, f"parameter gradient hook {_name(hook)} "
                                        f"({kind.strip('_').replace('_', ' ')}): it can rescale or zero the gradient"))
    for name, module in model.named_modules():
        for kind in ("_backward_hooks", "_backward_pre_hooks"):
            for hook in (getattr(module, kind, None) or {}).values():
                findings.append(Finding("gradient-hook", name or type(module).__name__,
                                        f"module {kind.strip('_').replace('_', ' ')} {_name(hook)}"))
    glob = torch.nn.modules.module
    for kind in ("_global_backward_hooks", "_global_backward_pre_hooks"):
        for hook in (getattr(glob, kind, None) or {}).values():
            findings.append(Finding("gradient-hook", "(every module)", f"global module backward hook {_name(hook)}"))
    return findings


def static_scan(model: torch.nn.Module) -> tuple[list[Finding], list[str]]:
    """Trace what torch.fx can trace (the model, else its submodules, outermost first) and scan
    the graphs. Returns the findings and the names of modules that could not be traced."""
    import torch.fx

    findings, untraced = [], []
    builtin = ("torch.nn.modules.",)

    def visit(name: str, module: torch.nn.Module) -> None:
        if type(module).__module__.startswith(builtin):
            return  # torch's own layers are differentiable by construction
        try:
            graph = torch.fx.symbolic_trace(module).graph
        except Exception:  # fx raises many types on untraceable code; we only need to know it failed
            untraced.append(name or type(module).__name__)
            for child_name, child in module.named_children():
                visit(f"{name}.{child_name}" if name else child_name, child)
            return
        findings.extend(_scan_graph(name or type(module).__name__, graph))

    visit("", model)
    return findings, untraced


def _scan_graph(module: str, graph) -> list[Finding]:
    findings = []
    for node in graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        target = _name(node.target)
        if target in ZERO_DERIVATIVE or target in ("argmax", "argmin", "multinomial", "bernoulli", "one_hot"):
            findings.append(Finding("static-op", module, f"traced graph calls {target} (node {node.name}): "
                                    "no useful gradient flows through it"))
        if target in ("add", "__add__", "iadd", "__iadd__") and len(node.args) == 2:
            x, other = node.args
            if _is_straight_through(x, other) or _is_straight_through(other, x):
                findings.append(Finding("straight-through", module, f"x + (g(x) - x).detach() at node {node.name}: "
                                        "the forward uses g(x) but gradients see the identity"))
    return findings


def _is_straight_through(x, other) -> bool:
    """other == (g(x) - x).detach() for the same node x."""
    if getattr(other, "op", None) not in ("call_method", "call_function") or _name(other.target) != "detach":
        return False
    inner = other.args[0]
    return (getattr(inner, "op", None) in ("call_function", "call_method") and _name(inner.target) in ("sub", "__sub__")
            and len(inner.args) == 2 and inner.args[1] is x)


def sensitivity(loss_fn: LossFn, parameters: dict[str, torch.nn.Parameter], names: list[str] | None = None,
                eps: float | None = None, seed: int = 0, tolerance: float = 0.1) -> list[dict]:
    """Finite difference vs autograd along a random unit direction, for each named parameter.

    Returns rows {parameter, finite_difference, autograd, relative_error, mismatch}. The step
    ``eps`` defaults to ~1e-3 of the tensor's RMS (float64) or 1e-2 (float32, where rounding of
    the loss limits a smaller step); a mismatch needs both a relative error over ``tolerance``
    and a difference above the rounding noise of the two loss evaluations.
    """
    names = names or list(parameters)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for name in names:
        p = parameters[name]
        u = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
        u /= u.norm()
        scale = float(p.detach().float().pow(2).mean().sqrt()) or 1.0
        step = eps or (1e-3 if p.dtype == torch.float64 else 1e-2) * max(scale, 1e-2) * math.sqrt(p.numel())
        with torch.enable_grad():
            loss = _seeded(loss_fn, seed)
            (grad,) = torch.autograd.grad(loss, [p], allow_unused=True)
        directional = 0.0 if grad is None else float((grad.double() * u.double()).sum())
        original = p.detach().clone()
        values = {}
        with torch.no_grad():
            for h in (step, step / 2):
                p.copy_(original).add_(u, alpha=h)
                up = float(_seeded(loss_fn, seed))
                p.copy_(original).add_(u, alpha=-h)
                down = float(_seeded(loss_fn, seed))
                values[h] = (up, down)
            p.copy_(original)
        (up, down), (up2, down2) = values[step], values[step / 2]
        fd, fd_half = (up - down) / (2 * step), (up2 - down2) / step
        difference = abs(fd - directional)
        relative = difference / max(abs(fd), abs(directional), 1e-30)
        # A change of the loss across the step smaller than the rounding inside the forward pass
        # (~1000 ulps of the loss: deep float32 nets lose that much) says nothing either way.
        floor = 1000 * torch.finfo(p.dtype).eps * max(abs(up), abs(down), abs(float(loss.detach())))
        resolved = max(abs(fd), abs(directional)) * 2 * step > floor
        # Nor does a difference quotient that changes with the step (rounding noise, a kink): a
        # smooth influence the gradient misses gives the same quotient at both steps.
        steady = abs(fd - fd_half) <= tolerance * max(abs(fd), abs(fd_half), 1e-30) or max(abs(fd), abs(fd_half)) == 0
        rows.append({"parameter": name, "finite_difference": fd, "finite_difference_half_step": fd_half,
                     "autograd": directional, "step": step, "relative_error": relative,
                     "mismatch": bool(relative > tolerance and resolved and steady)})
    return rows


def _seeded(loss_fn: LossFn, seed: int) -> torch.Tensor:
    """Run the loss with a fixed random state, so a stochastic loss (dropout, sampling) repeats."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return loss_fn()


@dataclass
class AuditResult:
    findings: list[Finding] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    """Every runtime event, known routes included."""
    sensitivity: list[dict] = field(default_factory=list)
    untraced: list[str] = field(default_factory=list)
    loss: float = float("nan")

    @property
    def flags(self) -> list[Finding]:
        return [f for f in self.findings if not f.known]


def audit(model: torch.nn.Module, loss_fn: LossFn, parameters: dict[str, torch.nn.Parameter] | None = None,
          sensitivity_of: int | list[str] = 4, static: bool = True, seed: int = 0) -> AuditResult:
    """Run the four blocked-gradient checks on ``model`` and the loss ``loss_fn()`` computes.

    ``parameters`` are the trainable ones to check (default: every parameter that requires
    grad). ``sensitivity_of`` is how many parameter tensors get the finite-difference check
    (spread evenly over the model, first and last always included) or their names. The gradients
    already in ``p.grad`` are kept aside and put back, so a training step can be audited between
    its backward pass and its optimizer step.
    """
    from alignlab.models.scoring import plain_autograd

    parameters = parameters or {n: p for n, p in model.named_parameters() if p.requires_grad}
    result = AuditResult()
    saved = {n: p.grad for n, p in parameters.items()}
    try:
        for p in parameters.values():
            p.grad = None
        with plain_autograd(model):
            # 1 and 2: one recorded forward, its graph walked, then one backward watched.
            recorder = OpRecorder(model)
            with torch.enable_grad(), recorder:
                loss = _seeded(loss_fn, seed)
            result.loss = float(loss.detach())
            if not loss.requires_grad:
                result.findings.append(Finding("unreachable", "(the loss)", "the loss does not require grad: "
                                               "no parameter can learn from it"))
            reached = reachable_parameters(loss) if loss.requires_grad else set()
            for name, p in parameters.items():
                if id(p) not in reached:
                    result.findings.append(Finding("unreachable", name, "the loss's autograd graph never reaches "
                                                   "this parameter: it gets no gradient"))
            for event in recorder.events.values():
                result.events.append(event)
                result.findings.append(Finding(event["check"], event["module"],
                                               f"{event['detail']} ({event['count']}x; {event['site']})", event["known"]))
            result.findings.extend(_watch_backward(loss, parameters) if loss.requires_grad else [])
            # 3
            result.findings.extend(registered_hooks(model, parameters))
            if static:
                found, result.untraced = static_scan(model)
                result.findings.extend(found)
            # 4
            names = sensitivity_of if isinstance(sensitivity_of, list) else _spread(list(parameters), sensitivity_of)
            result.sensitivity = sensitivity(loss_fn, parameters, names, seed=seed) if names else []
            for row in result.sensitivity:
                if row["mismatch"]:
                    result.findings.append(Finding(
                        "sensitivity", row["parameter"],
                        f"finite difference {row['finite_difference']:.4g} vs autograd {row['autograd']:.4g} along a "
                        f"random direction (relative error {row['relative_error']:.2f}): the loss depends on this "
                        "parameter in a way its gradient does not show"))
    finally:
        for name, p in parameters.items():
            p.grad = saved[name]
    return result


def _watch_backward(loss: torch.Tensor, parameters: dict[str, torch.nn.Parameter]) -> list[Finding]:
    """Backward once, watching custom Functions; report parameters whose gradient is None or zero."""
    findings, silent = [], []
    for node in custom_functions(loss):
        def check(grad_inputs, grad_outputs, node=node):
            wanted = [g for g, (fn, _) in zip(grad_inputs, node.next_functions) if fn is not None]
            incoming = any(g is not None and bool(g.abs().sum() > 0) for g in grad_outputs)
            if incoming and wanted and all(g is None or not bool(g.abs().sum() > 0) for g in wanted):
                silent.append(node._forward_cls.__name__)
        node.register_hook(check)
    names = list(parameters)
    grads = torch.autograd.grad(loss, [parameters[n] for n in names], allow_unused=True)
    for name in dict.fromkeys(silent):
        findings.append(Finding("custom-backward", name, f"custom autograd Function {name}: its backward returned "
                                "None or zeros for inputs that need a gradient, although gradient flowed into it"))
    for name, grad in zip(names, grads):
        if grad is not None and not bool(grad.abs().sum() > 0):
            # One batch is not evidence: LoRA's A matrices get exactly zero gradient while B is
            # still zero. Persistence over training steps (GradientPresence) or a finite
            # difference the gradient misses (sensitivity) are the red flags.
            findings.append(Finding("zero-gradient", name, "the gradient is exactly zero on the audited batch",
                                    known=ZERO_ON_ONE_BATCH))
    return findings


def _spread(names: list[str], count: int) -> list[str]:
    if count <= 0 or not names:
        return []
    if count >= len(names):
        return names
    picks = {round(i * (len(names) - 1) / max(count - 1, 1)) for i in range(count)}
    return [names[i] for i in sorted(picks)]


class GradientPresence:
    """Counts, per parameter, the training steps where its gradient was None or exactly zero."""

    def __init__(self):
        self.steps = 0
        self.missing: dict[str, int] = {}

    def observe(self, parameters: dict[str, torch.nn.Parameter]) -> None:
        self.steps += 1
        for name, p in parameters.items():
            g = p.grad
            if g is None:
                empty = True
            else:
                values = g.coalesce().values() if g.is_sparse else g
                empty = values.numel() == 0 or not bool(values.abs().amax() > 0)
            if empty:
                self.missing[name] = self.missing.get(name, 0) + 1

    def findings(self, share: float = 0.8, min_steps: int = 5) -> list[Finding]:
        """Parameters whose gradient was None or zero on at least ``share`` of at least ``min_steps`` steps."""
        if self.steps < min_steps:
            return []
        return [Finding("zero-gradient", name, f"gradient None or exactly zero on {n} of {self.steps} steps")
                for name, n in self.missing.items() if n / self.steps >= share]
