"""Stacked training: several runs that differ only in seed train in one vmapped step.

At batch 64 a training step is bound by per-operation overhead, not arithmetic (issue 15), so
S runs of one configuration are trained as one model whose parameters carry a leading member
axis: ``torch.func.stack_module_state`` stacks the members' modules, and
``vmap(functional_call(...), randomness="different")`` evaluates the method's own batch
objective for every member at once. The summed loss Σ_s L_s has ∂/∂θ_s = ∂L_s/∂θ_s, and
Adam(W) is elementwise, so one optimiser over the stacked leaves is S independent ones.

What stays each member's own, exactly as in a single run (:func:`ebm.training.train`):

* its initial parameters (built from its seed, in the same order as :meth:`StepMethod.fit`),
  its training rows (the validation carve-out depends on the seed) and its mini-batch order
  (its own generator, seeded as a single run's);
* gradient-norm clipping (``max_grad_norm``, on the member's own norm), its
  :class:`~ebm.training.TrainLoop` (monitor, model selection, patience, time budget) and its
  divergence check: a member whose loss turns non-finite gets a :class:`~ebm.method.Diverged`
  result, its gradients are zeroed from then on, and the others go on;
* its :class:`~ebm.method.Fitted` (its own modules, loaded with its selected parameters), with
  ``info["stacked"] = S``; ``train_seconds`` is the group's wall time;
* its prior q, where members have their own (:attr:`Member.space`: a frequency prior estimated
  from the member's training rows) and the method declares that q enters its training only through
  the space inside its objective (:attr:`~ebm.training.StepMethod.stacks_priors`): the template's
  space then holds, inside the vmapped step, each member's π as a batched tensor (:func:`_member_prior`).

A member that is done (its budget, its monitor, patience, divergence) leaves the stack before the
next step: the leaves and Adam's moments keep only the others' slices (:meth:`_Group.keep`), so
the rest of the group steps at a smaller group's cost instead of carrying finished members to the
end. (Under patience the members of a group stop at different steps: in the stored ``paper``
protocol its groups' members did 72 % of the member-steps the group computed.)

What is shared: the draws. One generator (seeded from the first member's seed) feeds every
member's samples under ``randomness="different"``, so each member's draws differ from the
others' and from its single run's: a stacked member is the same *distribution* of outcomes as
its single run, not the same numbers, except for methods without sampling (``bce``,
``exact-mle``, ``perceptron``), whose stacked members equal their single runs to float tolerance
(tests/test_stacking.py). PCD's chains started from q (``init="prior"``) are drawn from it too.

How a method's objective is reused unchanged: :meth:`StepMethod.train_model` runs once per
member and once on a *template* context whose ``x_train``/``y_train`` are the members' rows
concatenated (member s's batch indices are offset by the earlier members' row counts, so the
closure's ``x_train[index]`` reads the member's own rows; members may differ in their number of
rows, e.g. folds, as long as the batch size is the same); in every one ``ctx.train`` hands its pieces to a ``capture``
(:class:`~ebm.training.FitContext`) instead of training. The template's closure and optimiser
structure (learning rates, betas, decay per parameter group) run the stacked step; the
members' modules hold their slices for the monitor and for the result.

Per-row state that an objective carries from step to step (PCD's persistent chains,
``baselines.mcmc``) lives in the template's closure as one tensor over the concatenated rows,
so member s's rows of it are its own (the same offsets as its data). The objective reads it
with its batch's (offset) indices and writes it back with :func:`write_rows`: in a single run
an in-place ``target[index] = values``; inside the stacked step, where ``values`` has a member
axis that an unbatched tensor cannot take in place, the write is deferred, returned from the
vmapped call and applied for all members at once after it (their rows are disjoint).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ebm.batching import is_stacked
from ebm.method import Budget, Diverged, FitData, Fitted, Monitor
from ebm.spaces import Multilabel, OutputSpace
from ebm.training import (
    BatchObjective,
    FitContext,
    PreSteps,
    TrainLoop,
    check_fit_data,
    loop_info,
    make_optimizer,
    minibatches,
    setup_fit,
)

if TYPE_CHECKING:
    from ebm.training import StepMethod


@dataclass(frozen=True)
class Member:
    """One run of a stacked group: its data (features and labels shaped as the others'; the
    number of rows may differ), its seed (initial parameters and mini-batch order), its monitor,
    and its model space where its prior q is its own (a frequency prior from its training rows;
    None: the group's space)."""

    data: FitData
    seed: int
    monitor: Monitor | None = None
    space: OutputSpace | None = None


def _member_priors(space: OutputSpace, members: list[Member], stacks_priors: bool) -> Tensor | None:
    """The members' prior probabilities π (S, k) when some member's q differs from ``space``'s,
    else None (every member trains with the group's q). A clear ``ValueError`` when the members'
    spaces differ in anything but π, or the method does not take per-member priors."""
    spaces = [m.space or space for m in members]
    if any(type(s) is not type(space) or s.k != space.k for s in spaces):
        raise ValueError(f"stacked members need {space!r}'s kind and k, got {spaces}")
    group_probs = getattr(space, "prior_probs", None)
    probs = [getattr(s, "prior_probs", None) for s in spaces]
    if all(p is None if group_probs is None else p is not None and torch.equal(p, group_probs) for p in probs):
        return None
    if not stacks_priors:
        raise ValueError("members with their own prior q train stacked only with a method whose q enters "
                         "training through the space alone (StepMethod.stacks_priors)")
    own = [p for p in probs if p is not None]
    if len(own) < len(probs):
        raise ValueError(f"stacked members with their own prior need a factorised prior each, got {spaces}")
    return torch.stack(own)


@contextmanager
def _member_prior(space: OutputSpace, probs: Tensor | None) -> Iterator[None]:
    """Inside a vmapped call: ``space`` (the template's own copy) holds the member's prior
    probabilities π (a batched tensor), so every q the objective computes through the space (its
    logits, log q(y), prior draws) is the member's; restored after. ``probs`` None: as it is."""
    if probs is None:
        yield
        return
    assert isinstance(space, Multilabel)  # the only space with a prior of its own (_member_priors)
    previous, space.prior_probs = space.prior_probs, probs
    try:
        yield
    finally:
        space.prior_probs = previous


@dataclass(frozen=True)
class _RowWrite:
    """A deferred ``target[index] = values`` of a stacked step: ``target`` the template's
    (unbatched) tensor, ``index`` and ``values`` the member's (batched by vmap)."""

    target: Tensor
    index: Tensor
    values: Tensor


#: the row writes of the stacked step being evaluated (None outside one)
_PENDING_WRITES: ContextVar[list[_RowWrite] | None] = ContextVar("pending_row_writes", default=None)


@torch.no_grad()
def write_rows(target: Tensor, index: Tensor, values: Tensor) -> None:
    """``target[index] = values`` (rows along the first axis), also inside a stacked step.

    A single run writes in place, now. Inside a stacked step ``index``/``values`` carry a
    member axis and ``target`` (the template's rows of all members) none, so the write is
    recorded and :func:`fit_stacked` applies it for every member when the step's vmapped
    call returns; the caller must not read ``target[index]`` again within the same step."""
    if not (is_stacked(index) or is_stacked(values)):
        target[index] = values
        return
    pending = _PENDING_WRITES.get()
    if pending is None:
        raise RuntimeError("write_rows got a batched tensor outside a stacked step (ebm.stacking.fit_stacked)")
    pending.append(_RowWrite(target, index, values))


def _apply_writes(targets: list[Tensor], indices: list[Tensor], values: list[Tensor]) -> None:
    """The deferred writes of a step, all members at once: ``indices`` (S, b) already carry
    each member's row offset, so the members' rows never overlap."""
    with torch.no_grad():
        for target, index, value in zip(targets, indices, values):
            target[index.reshape(-1)] = value.reshape(-1, *value.shape[2:]).to(target.dtype)


@dataclass
class _Captured:
    """What ``ctx.train`` was called with (:meth:`ebm.training.FitContext.train`)."""

    snapshot: Callable[[], Fitted]
    batch_objective: BatchObjective
    modules: list[nn.Module]
    extra_info: dict[str, Any]
    pre_steps: PreSteps | None = None
    optimizer: torch.optim.Optimizer | None = None


class _CaptureSignal(Exception):
    def __init__(self, captured: _Captured) -> None:
        super().__init__("captured")
        self.captured = captured


def _capture(method: StepMethod, space: OutputSpace, model: str, data: FitData, params: dict[str, Any],
             budget: Budget, seed: int, device: torch.device, monitor: Monitor | None) -> _Captured:
    """Run ``method.train_model`` up to its ``ctx.train`` call (the same setup as
    :meth:`StepMethod.fit`, so the modules start from the seed's single-run initialisation)."""

    def capture(snapshot, batch_objective, modules, extra_info, pre_steps):
        raise _CaptureSignal(_Captured(snapshot, batch_objective, list(modules), dict(extra_info), pre_steps))

    setup = setup_fit(space, method.energy_model(model), data, params, budget, seed=seed, device=device)
    optimizer = make_optimizer(setup.energy, float(params["lr"]), float(params["weight_decay"]))
    ctx = FitContext(space, model, params, setup, optimizer, budget, monitor, seed, device, capture=capture)
    try:
        method.train_model(ctx)
    except _CaptureSignal as signal:
        signal.captured.optimizer = optimizer
        return signal.captured
    raise RuntimeError(f"{method.name}.train_model returned without calling ctx.train: it cannot be stacked")


class _Objective(nn.Module):
    """The template's modules (so ``functional_call`` can swap in a member's parameters) and
    its batch objective; ``forward`` returns the scalar loss and the indices and values of the
    objective's deferred :func:`write_rows`, which go to ``pending`` (vmap outputs must be
    tensors; the writes' targets are read from ``pending`` after the call).

    ``pending`` and the :data:`_PENDING_WRITES` context are set around the vmapped call by
    :func:`_vmapped_calls`, not in here: the traced function then holds no ``ContextVar`` call,
    which ``torch.compile`` cannot trace (``compile_step``)."""

    def __init__(self, modules: list[nn.Module], batch_objective: BatchObjective) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.batch_objective = batch_objective
        self.energy_evals = 0
        self.pending: list[_RowWrite] = []

    def forward(self, index: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        loss, self.energy_evals = self.batch_objective(index)
        return loss, [w.index for w in self.pending], [w.values for w in self.pending]


@dataclass
class _Group:
    """The stacked state: leaves ``params`` / ``buffers`` (name → (S, ...)) whose leading axis
    holds the members listed in ``stacked`` (member numbers, in order), and every member's modules.
    A leaf named in ``transposed`` (a Linear layer's weight) holds its parameter's transpose,
    (S, in, out) rather than (S, out, in): :meth:`arguments` gives the step the parameters in the
    modules' layout."""

    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    members: list[nn.Module]
    stacked: list[int]
    transposed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, holders: Sequence[nn.Module], transposed: frozenset[str]) -> _Group:
        """Every member of ``holders`` stacked (``torch.func.stack_module_state``), the leaves named in
        ``transposed`` held as (S, in, out) (new contiguous leaves)."""
        from torch.func import stack_module_state

        params, buffers = stack_module_state(holders)
        leaves = {name: p.detach().transpose(1, 2).contiguous().requires_grad_(p.requires_grad)
                  if name in transposed else p for name, p in params.items()}
        return cls(leaves, dict(buffers), list(holders), list(range(len(holders))), transposed)

    def arguments(self) -> dict[str, Tensor]:
        """The parameters as the members' modules hold them (a transposed leaf as a view)."""
        return {name: p.transpose(1, 2) if name in self.transposed else p for name, p in self.params.items()}

    @torch.no_grad()
    def load(self, s: int) -> None:
        """Copy member ``s``'s slices into its own modules (for its monitor and its result)."""
        position, holder, params = self.stacked.index(s), self.members[s], self.arguments()
        for name, p in holder.named_parameters():
            p.copy_(params[name][position])
        for name, b in holder.named_buffers():
            b.copy_(self.buffers[name][position])

    @torch.no_grad()
    def keep(self, members: list[int], optimizer: torch.optim.Optimizer,
             rebuild: Callable[[dict[str, Tensor]], torch.optim.Optimizer]) -> torch.optim.Optimizer:
        """Only ``members`` (a subsequence of :attr:`stacked`) stay stacked: new leaves hold their
        slices, and a new optimiser (``rebuild`` of the new leaves) their slices of the old one's
        state (Adam's moments; its step count is every member's, they all stepped together). Each
        kept member's arithmetic is unchanged; the step's cost falls with the group's size."""
        positions = torch.tensor([self.stacked.index(s) for s in members])

        def kept(value: Any) -> Any:  # a per-member tensor's kept rows; a shared scalar (Adam's step) as is
            if not torch.is_tensor(value):
                return value
            return value.index_select(0, positions.to(value.device)) if value.dim() > 0 else value.clone()

        old = self.params
        self.params = {name: kept(p).requires_grad_(p.requires_grad) for name, p in old.items()}
        self.buffers = {name: kept(b) for name, b in self.buffers.items()}
        rebuilt = rebuild(self.params)
        for name, leaf in self.params.items():
            if state := optimizer.state.get(old[name]):
                rebuilt.state[leaf] = {key: kept(value) for key, value in state.items()}
        self.stacked = list(members)
        return rebuilt


def _linear_weights(wrapper: nn.Module) -> frozenset[str]:
    """The names of ``wrapper``'s Linear weights (W of y = x Wᵀ + b), stacked transposed.

    Why: under vmap the weight's gradient comes out of the batched product xᵀ ∂y, (S, in, out),
    and reaches a stacked (S, out, in) leaf as a transposed view that autograd copies into the
    leaf's layout (every wide layer, every step: 9 of lr-vowel's 60 ms group step at hidden
    256); a leaf stored as (S, in, out) takes it as it is. The values are the same; the products
    read the weight in the other memory order, so sums may round differently."""
    return frozenset(f"{name}.weight" for name, module in wrapper.named_modules() if isinstance(module, nn.Linear))


def _stacked_optimizer(template: torch.optim.Optimizer, wrapper: nn.Module,
                       params: dict[str, Tensor]) -> torch.optim.Optimizer:
    """The template's optimiser (class, per-group hyperparameters) over the stacked leaves."""
    name_of = {id(p): name for name, p in wrapper.named_parameters()}
    groups = []
    for group in template.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        leaves = [params[name_of[id(p)]] for p in group["params"] if id(p) in name_of]
        if leaves:
            groups.append({**settings, "params": leaves})
    accepted = inspect.signature(type(template).__init__).parameters
    defaults = {k: v for k, v in template.defaults.items() if k in accepted}
    return type(template)(groups, **defaults)


def _clip_per_member(grads: list[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` on each member's own global norm (the leading axis is the member)."""
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (S,)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def _vmapped_calls(wrapper: _Objective, space: OutputSpace, *, compile_step: bool = False) -> Callable[..., Any]:
    """(stacked params, stacked buffers, (S, b) indices[, (S, k) priors]) → ``wrapper``'s outputs for
    every member, each through its own slices (and its own prior when given: :func:`_member_prior`
    on the template's ``space``); the targets of the call's deferred writes are then in
    ``[w.target for w in wrapper.pending]``. ``compile_step``: the vmapped call through
    ``torch.compile`` (:func:`fit_stacked`)."""
    from torch.func import functional_call, vmap

    def member_call(p: dict[str, Tensor], b: dict[str, Tensor], index: Tensor, *probs: Tensor) -> Any:
        with _member_prior(space, probs[0] if probs else None):
            return functional_call(wrapper, (p, b), (index,))

    calls = vmap(member_call, randomness="different")
    if compile_step:
        calls = torch.compile(calls, dynamic=False)

    def collecting_writes(*arguments: Any) -> Any:
        writes: list[_RowWrite] = []
        wrapper.pending, token = writes, _PENDING_WRITES.set(writes)
        try:
            return calls(*arguments)
        finally:
            _PENDING_WRITES.reset(token)

    return collecting_writes


def _vmapped_pre_steps(pre_steps: PreSteps, modules: list[nn.Module],
                       space: OutputSpace) -> Callable[..., Tensor]:
    """(stacked params, stacked buffers, (S, b) indices[, (S, k) priors]) → (S,) losses of the
    template's :class:`~ebm.training.PreSteps` objective (:func:`_vmapped_calls`)."""
    objective = pre_steps.objective
    # the same leaf names as the step's wrapper
    calls = _vmapped_calls(_Objective(modules, lambda index: (objective(index), 0)), space)
    return lambda *arguments: calls(*arguments)[0]


def fit_stacked(method: StepMethod, space: OutputSpace, model: str, members: list[Member],
                params: dict[str, Any], budget: Budget, *, device: torch.device | str,
                compile_step: bool = False) -> list[Fitted | BaseException]:
    """Train ``members`` (same method, space, model, hyperparameters and budget; their own
    seeds, data rows and monitors) stacked; see the module docstring. Returns one entry per
    member, in order: its :class:`Fitted`, or the exception that ended it alone (a
    :class:`Diverged`). A ``ValueError`` (refused configuration, members of unequal shapes) or
    an error of the whole group is raised.

    ``compile_step``: the step's vmapped objective (forward and backward) goes through
    ``torch.compile`` (one graph per group size: a member that leaves recompiles it). Off in the
    harness: on CPU it did not pay for its compile time (``ebm-bench perf --benchmarks compile``)."""
    device = torch.device(device)
    params = method.full_params(space, model, params)
    if not method.can_stack(space, model, params):
        raise ValueError(f"{method.name} cannot train {model!r} on {space!r} stacked with these hyperparameters")
    if not members:
        return []
    for member in members:
        check_fit_data(space, member.data)
    # one batch shape for all: the same features and label shape, and the same batch size
    # min(batch_size, n) (fold sizes may differ by a row; each member draws from its own n)
    shapes = {(tuple(m.data.x_train.shape[1:]), min(budget.batch_size, m.data.x_train.shape[0])) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"stacked members need one feature shape and batch size, got {sorted(shapes)}")
    size, rows_per_member = len(members), [m.data.x_train.shape[0] for m in members]
    # members with their own q (π, S × k): the template trains on a copy of the space whose π is,
    # inside each vmapped call, the member's (_member_prior); each member's own modules and
    # snapshot keep its own space (its evaluation's q)
    priors = _member_priors(space, members, method.stacks_priors)
    template_space = space if priors is None else copy.copy(space)

    captured = [_capture(method, m.space or space, model, m.data, params, budget, m.seed, device, m.monitor)
                for m in members]
    rows = FitData(torch.cat([m.data.x_train for m in members]), torch.cat([m.data.y_train for m in members]))
    template = _capture(method, template_space, model, rows, params, budget, members[0].seed, device, None)

    wrapper = _Objective(template.modules, template.batch_objective)
    # each member's modules in a module of the wrapper's structure: the same leaf names
    holders = [_Objective(c.modules, c.batch_objective) for c in captured]
    group = _Group.of(holders, _linear_weights(wrapper))
    template_optimizer = template.optimizer
    assert template_optimizer is not None  # set by _capture
    optimizer = _stacked_optimizer(template_optimizer, wrapper, group.params)
    leaves = [p for g in optimizer.param_groups for p in g["params"]]
    clip = params.get("max_grad_norm")
    max_grad_norm = None if clip is None else float(clip)

    # (S,) losses, the deferred writes' indices, values
    step_losses = _vmapped_calls(wrapper, template_space, compile_step=compile_step)
    # the method's extra steps before each step (ebm.training.PreSteps: minmax-reinforce's sampler-only
    # ascent), every member's at once: the template's pre-step objective through the same leaves
    pre_steps = template.pre_steps if template.pre_steps is not None and template.pre_steps.count > 0 else None
    pre_step_losses = (_vmapped_pre_steps(pre_steps, template.modules, template_space) if pre_steps is not None
                       else None)
    # the stacked members' priors, as the vmapped calls' last argument (none: the group's q)
    step_priors: tuple[Tensor, ...] = () if priors is None else (priors,)
    streams: list[Iterator[Tensor]] = [
        minibatches(n, budget.batch_size, generator=torch.Generator().manual_seed(m.seed), device=device)
        for m, n in zip(members, rows_per_member)]
    # member s's rows start at the sum of the earlier members' row counts in the template's data
    offsets = torch.tensor([sum(rows_per_member[:s]) for s in range(size)], device=device)[:, None]
    loops = [TrainLoop(budget, m.monitor, c.snapshot, c.modules) for m, c in zip(members, captured)]
    results: list[Fitted | BaseException | None] = [None] * size
    active = [True] * size

    def finish(s: int) -> None:
        """Member ``s`` is done (budget, monitor, patience): its result from its own modules."""
        active[s] = False
        group.load(s)
        for module in captured[s].modules:
            if any(not torch.isfinite(p).all() for p in module.parameters()):
                results[s] = Diverged(f"non-finite parameter in {type(module).__name__} after "
                                      f"{loops[s].steps} steps")
                return
        loops[s].restore_selected()
        fitted = captured[s].snapshot()
        fitted.info.update(loop_info(loops[s], **captured[s].extra_info, stacked=size))
        results[s] = fitted

    # the members' monitors evaluate their own modules (group.load), never the template's: these
    # stay in train mode from here on (Module.train walks every submodule: not once a step)
    for module in template.modules:
        module.train()
    while True:
        for s in group.stacked:
            if active[s] and not loops[s].running():
                finish(s)
        if not any(active):
            break
        if not all(active[s] for s in group.stacked):
            # a member that finished (budget, patience, divergence) leaves the stack: its slot is freed,
            # the others' steps cost what a smaller group's do
            optimizer = group.keep([s for s in group.stacked if active[s]], optimizer,
                                   lambda kept: _stacked_optimizer(template_optimizer, wrapper, kept))
            leaves = [p for g in optimizer.param_groups for p in g["params"]]
            step_priors = () if priors is None else (priors[group.stacked],)
        stacked = group.stacked
        index = torch.stack([next(streams[s]) for s in stacked]) + offsets[stacked]
        optimizer.zero_grad(set_to_none=True)
        if pre_steps is not None and pre_step_losses is not None:  # as run_steps: from None gradients, not clipped
            for _ in range(pre_steps.count):
                pre_step_losses(group.arguments(), group.buffers, index, *step_priors).sum().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        losses, write_indices, write_values = step_losses(group.arguments(), group.buffers, index, *step_priors)
        _apply_writes([w.target for w in wrapper.pending], write_indices, write_values)
        values = losses.detach().tolist()
        live = [math.isfinite(value) for value in values]
        if any(live):
            if all(live):
                losses.sum().backward()
            else:
                mask = torch.tensor(live, device=losses.device)
                torch.where(mask, losses, torch.zeros_like(losses)).sum().backward()
                for p in leaves:  # a dead member's backward may still carry NaN: zero it
                    if p.grad is not None:
                        p.grad.copy_(torch.where(mask.view(-1, *([1] * (p.dim() - 1))), p.grad,
                                                 torch.zeros_like(p.grad)))
            if max_grad_norm is not None:
                _clip_per_member([p.grad if p.grad is not None else torch.zeros_like(p) for p in leaves],
                                 max_grad_norm)
            optimizer.step()
        for position, s in enumerate(stacked):
            loop = loops[s]
            upcoming = loop.steps + 1
            if upcoming % budget.eval_every == 0 or upcoming == budget.max_steps:
                group.load(s)  # the monitor's snapshot reads the member's own modules
            try:
                loop.step(values[position], wrapper.energy_evals)
            except Diverged as exc:
                active[s], results[s] = False, exc
    return [r if r is not None else RuntimeError("stacked member produced no result") for r in results]
