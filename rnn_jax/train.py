"""Training with Optax: a train state, a jitted train step, evaluation, early stopping, a loop.

One optimisation step on a mini-batch ``(x, y)`` is

.. math::

    g = \\nabla_\\theta \\mathcal{L}(\\theta; x, y, k_s), \\qquad
    (u, s') = \\mathrm{opt.update}(g, s, \\theta), \\qquad \\theta' = \\theta + u

where ``k_s = fold_in(key, step)`` is a fresh PRNG key for step ``s`` (dropout and any other
randomness of the loss): the key of a step depends only on the run's key and the step
number, so a run resumed from a checkpoint draws exactly the keys it would have drawn.

The pieces are independent and reusable by any task:

- :class:`TrainState` ``(params, opt_state, step, key)``, a pytree;
- :func:`default_optimizer`: ``clip_by_global_norm`` then Adam with a warm-up + cosine
  schedule;
- :func:`make_train_step` builds ``train_step(state, batch) -> (state, metrics)`` from any
  loss ``loss_fn(params, batch, *, key)`` and any ``optax.GradientTransformation``;
- :func:`evaluate` sums per-batch statistics (counts, masked loss sums) over a data set;
- :class:`EarlyStopping` (hyper-parameters) with a pure ``update`` of an
  :class:`EarlyStoppingState` tracks a validation metric;
- :func:`fit` is the loop: resumes from the latest checkpoint, logs, evaluates, checkpoints,
  stops early, returns the best state, stops with :class:`NonFiniteLossError` on a NaN/inf
  loss or gradient without writing the bad state, and on SIGTERM/SIGINT checkpoints and
  raises :class:`TrainingInterrupted`.

Non-finite updates: the train step returns ``metrics["finite"]`` (loss, gradients and new
parameters all finite) and, when the loss or a gradient is not finite, keeps the previous
``params`` and ``opt_state`` (the update is skipped; ``step`` still advances). :func:`fit` reads that flag
only when it syncs with the host anyway (logging, evaluation, before every checkpoint, and
at least every 100 steps), and then raises :class:`NonFiniteLossError` naming the first
bad step, without saving.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> def loss_fn(params, batch, *, key):
    ...     x, y = batch
    ...     return jnp.mean((x @ params - y) ** 2)
    >>> optimizer = default_optimizer(0.1)
    >>> state = init_train_state(jnp.zeros(3), optimizer, key=jax.random.key(0))
    >>> train_step = make_train_step(loss_fn, optimizer)
    >>> x = jnp.eye(3); y = jnp.array([1.0, 2.0, 3.0])
    >>> for _ in range(200):
    ...     state, metrics = train_step(state, (x, y))
    >>> int(state.step), bool(metrics["loss"] < 1e-3)
    (200, True)
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Int

from rnn_jax._optim import optimizer_step

if TYPE_CHECKING:
    from rnn_jax.progress import ProgressBar

__all__ = [
    "CheckpointerLike",
    "EarlyStopping",
    "EarlyStoppingState",
    "FitResult",
    "MetricsLoggerLike",
    "NonFiniteLossError",
    "TrainState",
    "TrainingDivergedWarning",
    "TrainingInterrupted",
    "default_optimizer",
    "evaluate",
    "fit",
    "init_train_state",
    "make_train_step",
    "optimizer_step",
]

PyTree = Any
LossFn = Callable[..., Any]


class NonFiniteLossError(FloatingPointError):
    """The training loss or gradient became NaN or infinite; nothing after it was saved.

    Attributes:
        step: the first step whose loss, gradient or updated parameters were not finite.
    """

    def __init__(self, message: str, *, step: int | None = None):
        super().__init__(message)
        self.step = step


class TrainingInterrupted(Exception):  # noqa: N818 (an event, not an error)
    """:func:`fit` received SIGTERM or SIGINT, finished its step, checkpointed and stopped.

    Attributes:
        signum: the signal number.
        step: the last step taken (and checkpointed, if there is a checkpointer).
        exit_code: ``128 + signum``, the conventional exit status of a process ended by it.
    """

    def __init__(self, signum: int, step: int, saved: bool):
        self.signum, self.step, self.exit_code = signum, step, 128 + signum
        name = signal.Signals(signum).name
        where = f"checkpoint of step {step} written" if saved else "no checkpointer, nothing saved"
        super().__init__(f"training interrupted by {name} after step {step} ({where}).")


class TrainingDivergedWarning(RuntimeWarning):
    """The training loss grew by orders of magnitude (usually a too-high learning rate)."""


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes:
        params: the model parameters (any pytree, e.g. :class:`~rnn_jax.RNNParams`).
        opt_state: the optimiser state (``optimizer.init(params)``).
        step: ``()`` int32, the number of updates applied so far.
        key: the run's PRNG key (never advanced: step ``s`` uses ``fold_in(key, s)``).
    """

    params: PyTree
    opt_state: PyTree
    step: Int[Array, ""]
    key: jax.Array


TrainStep = Callable[[TrainState, Any], tuple[TrainState, dict[str, Array]]]


def init_train_state(
    params: PyTree, optimizer: optax.GradientTransformation, *, key: jax.Array
) -> TrainState:
    """A fresh :class:`TrainState` at step 0.

    Args:
        params: initial parameters.
        optimizer: the Optax transformation that will update them.
        key: the run's PRNG key (required; there is no default key).
    """
    if not isinstance(key, jax.Array):
        raise ValueError(f"`key` must be a jax.random key, got {type(key).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"`optimizer` must be an optax.GradientTransformation, got {type(optimizer).__name__}."
        )
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=key,
    )


def default_optimizer(
    learning_rate: float = 1e-3,
    *,
    clip_norm: float | None = 1.0,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    final_fraction: float = 0.1,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)`` followed by Adam(W) with a schedule.

    Why clipping matters for RNNs: the gradient of a loss at step ``t`` with respect to
    ``a<k>`` is a product of ``t - k`` Jacobians ``diag(g'(z<j>)) W_aa``. When the largest
    singular value of those factors exceeds one the product grows exponentially with the
    distance ``t - k`` (*exploding gradients*), and a single long sentence can produce a
    gradient so large that one Adam step throws the weights far away (or to NaN).
    Rescaling the whole gradient to global norm at most ``clip_norm`` keeps its direction and
    bounds the step size, so training stays stable without hurting ordinary steps (Pascanu,
    Mikolov & Bengio, 2013). Clipping does nothing for *vanishing* gradients.

    Schedule: a linear warm-up from 0 over ``warmup_steps``, then, if ``total_steps`` is
    given, a cosine decay to ``final_fraction * learning_rate`` at ``total_steps``
    (otherwise constant).

    Args:
        learning_rate: peak learning rate.
        clip_norm: maximum global gradient norm; ``None`` turns clipping off.
        warmup_steps: linear warm-up length.
        total_steps: length of the whole schedule (warm-up included), or ``None``.
        final_fraction: the learning rate at ``total_steps`` relative to the peak.
        weight_decay: decoupled weight decay (AdamW) if positive.

    Returns:
        An ``optax.GradientTransformation``.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = default_optimizer(1e-2, clip_norm=1.0)
        >>> params = jnp.zeros(2)
        >>> params, state = optimizer_step(opt, jnp.array([300.0, 400.0]), opt.init(params), params)
        >>> params.shape
        (2,)
    """
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive, got {learning_rate!r}.")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"`clip_norm` must be positive or None, got {clip_norm!r}.")
    if warmup_steps < 0:
        raise ValueError(f"`warmup_steps` must be >= 0, got {warmup_steps!r}.")
    if total_steps is not None:
        if total_steps <= warmup_steps:
            raise ValueError(
                f"`total_steps` must exceed `warmup_steps` = {warmup_steps}, got {total_steps}."
            )
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=total_steps,
            end_value=final_fraction * learning_rate,
        )
    elif warmup_steps > 0:
        schedule = optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup_steps),
                optax.constant_schedule(learning_rate),
            ],
            [warmup_steps],
        )
    else:
        schedule = learning_rate
    adam = (
        optax.adamw(schedule, weight_decay=weight_decay)
        if weight_decay > 0
        else optax.adam(schedule)
    )
    if clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(clip_norm), adam)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    jit: bool = True,
) -> TrainStep:
    """Builds ``train_step(state, batch) -> (new_state, metrics)``.

    Args:
        loss_fn: ``loss_fn(params, batch, *, key) -> loss`` (a scalar), or
            ``-> (loss, aux)`` with ``has_aux=True`` where ``aux`` is a dict of scalars that
            are returned in ``metrics``. ``key`` is ``fold_in(state.key, state.step)``.
        optimizer: any ``optax.GradientTransformation``.
        has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
        jit: compile the step with ``jax.jit`` (one compile per distinct batch shape).

    Returns:
        The step function. ``metrics`` holds ``loss``, ``grad_norm`` (before clipping),
        ``finite`` (a bool array: loss, every gradient and every updated parameter finite)
        and the ``aux`` entries. When the loss or a gradient is not finite the update is
        skipped inside the step: ``params`` and ``opt_state`` keep their previous values
        (``step`` advances), so a NaN gradient never enters the state and the flag can be
        read later without a host sync every step; :func:`fit` reads it and stops. (A finite
        update that overflows a parameter is flagged but kept: see :func:`guarded_update`.)
    """

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, Array]]:
        key = jax.random.fold_in(state.key, state.step)

        def objective(params):
            out = loss_fn(params, batch, key=key)
            return out if has_aux else (out, {})

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        params, opt_state, finite = guarded_update(optimizer, loss, grads, state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **dict(aux)}
        metrics["finite"] = finite
        return TrainState(params, opt_state, state.step + 1, state.key), metrics

    return jax.jit(train_step) if jit else train_step


def guarded_update(
    optimizer: optax.GradientTransformation, loss: Array, grads: Any, state: TrainState
) -> tuple[Any, Any, Array]:
    """The optimiser update of ``state``, skipped when the loss or a gradient is not finite.

    Returns ``(params, opt_state, finite)``. The skip is decided on the loss and the
    gradients, which exist before the update, so XLA fuses the select into the update
    itself (deciding on the new parameters too cost a second pass over every parameter
    and Adam moment: 10-20 % of a data-parallel step on the 10k-word benchmarks).
    ``finite`` also covers the new parameters: a finite update that overflows a parameter
    is flagged (and :func:`fit` stops without saving) though it is not undone.
    (Shared by :func:`make_train_step` and :func:`rnn_jax.parallel.make_parallel_train_step`.)
    """
    new_params, new_opt_state = optimizer_step(optimizer, grads, state.opt_state, state.params)
    ok = all_finite((loss, grads))
    keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
    params = jax.tree_util.tree_map(keep, new_params, state.params)
    opt_state = jax.tree_util.tree_map(keep, new_opt_state, state.opt_state)
    return params, opt_state, ok & all_finite(params)


def all_finite(tree: PyTree) -> Array:
    """Whether every float leaf of ``tree`` is finite: a ``()`` bool array (also used by
    :func:`rnn_jax.parallel.make_parallel_train_step`)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def evaluate(
    eval_step: Callable[[PyTree, Any], PyTree],
    params: PyTree,
    batches: Iterable[Any],
    *,
    finalize: Callable[[PyTree], dict[str, float]] | None = None,
) -> Any:
    """Sums per-batch statistics over a data set, then turns the sums into metrics.

    Per-batch scores must not be averaged (batches have different numbers of valid
    tokens): ``eval_step(params, batch)`` returns *sums* over the batch's valid positions
    (a masked loss sum, a token count, :class:`~rnn_jax.metrics.ConfusionCounts`, ...),
    they are added leaf by leaf over all batches, and ``finalize(totals)`` computes the
    corpus-level metrics (e.g. ``loss_sum / count``, ``counts.f1()``).

    Args:
        eval_step: ``(params, batch) -> pytree of sums`` (jit it yourself).
        params: the parameters to evaluate.
        batches: an iterable of batches (e.g. an unshuffled epoch).
        finalize: ``totals -> dict``; ``None`` returns the totals.

    Example:
        >>> import jax.numpy as jnp
        >>> step = lambda p, b: {"sum": jnp.sum(b * p), "n": b.size}
        >>> evaluate(step, 2.0, [jnp.ones(3), jnp.ones(1)],
        ...          finalize=lambda t: {"mean": float(t["sum"] / t["n"])})
        {'mean': 2.0}
    """
    totals = None
    for batch in batches:
        stats = eval_step(params, batch)
        totals = stats if totals is None else jax.tree_util.tree_map(jnp.add, totals, stats)
    if totals is None:
        raise ValueError("`batches` must hold at least one batch, got none.")
    return finalize(totals) if finalize is not None else totals


class EarlyStoppingState(NamedTuple):
    """The state of :class:`EarlyStopping` (JSON-friendly: ``state._asdict()`` is stored).

    Attributes:
        best: the best value so far (``None`` before the first evaluation).
        best_step: the step of the best value.
        num_bad: evaluations since the last improvement (0 right after one).
    """

    best: float | None = None
    best_step: int | None = None
    num_bad: int = 0


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when a validation metric has not improved for ``patience`` evaluations.

    The hyper-parameters live here; the changing part is an :class:`EarlyStoppingState`,
    updated by the pure :meth:`update` (as an optax transformation and its state).

    Attributes:
        metric: the name of the metric in the evaluation dict (e.g. ``"f1"``).
        mode: ``"max"`` (higher is better) or ``"min"``.
        patience: evaluations without improvement before stopping (``None``: never stop,
            but still track the best).
        min_delta: an improvement must exceed this.

    Example:
        >>> es = EarlyStopping("f1", mode="max", patience=2)
        >>> state = es.init()
        >>> for step, value in enumerate([0.5, 0.7, 0.6, 0.65]):
        ...     state = es.update(state, value, step)
        >>> es.should_stop(state), state.best, state.best_step
        (True, 0.7, 1)
    """

    metric: str
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min', got {self.mode!r}.")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"`patience` must be a positive int or None, got {self.patience!r}.")

    def init(self) -> EarlyStoppingState:
        return EarlyStoppingState()

    def is_better(self, state: EarlyStoppingState, value: float) -> bool:
        """Whether ``value`` improves on ``state.best`` by more than ``min_delta``."""
        if state.best is None:
            return True
        if self.mode == "max":
            return value > state.best + self.min_delta
        return value < state.best - self.min_delta

    def update(self, state: EarlyStoppingState, value: float, step: int) -> EarlyStoppingState:
        """Records one evaluation (pure); the result has ``num_bad == 0`` iff it improved.

        A NaN or infinite value never improves.
        """
        value = float(value)
        if math.isfinite(value) and self.is_better(state, value):
            return EarlyStoppingState(best=value, best_step=int(step), num_bad=0)
        return state._replace(num_bad=state.num_bad + 1)

    def should_stop(self, state: EarlyStoppingState) -> bool:
        return self.patience is not None and state.num_bad >= self.patience


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        state: the best state by the early-stopping metric when ``restore_best`` (the
            default with ``early_stopping``), else the final state.
        best_step: step of the best validation metric (``None`` without evaluation).
        best_metrics: validation metrics at ``best_step`` (metrics only; no ``"step"``).
        stopped_early: whether early stopping ended the run.
        resumed_from: the checkpoint step the run resumed from (``None``: started fresh).
        train_seconds: wall time of training (evaluations included), summed over all the
            calls that resumed this run.
        last_step: the number of steps trained (the final state's step).
    """

    state: TrainState
    best_step: int | None
    best_metrics: dict[str, float] | None
    stopped_early: bool
    resumed_from: int | None
    train_seconds: float
    last_step: int = 0


@runtime_checkable
class CheckpointerLike(Protocol):
    """What :func:`fit` needs of a checkpointer (:class:`rnn_jax.checkpoint.Checkpointer`)."""

    def latest_step(self) -> int | None: ...

    def all_steps(self) -> list[int]: ...

    def keep_best(self, metric: str, mode: str) -> None: ...

    def save(
        self,
        state: TrainState,
        *,
        meta: dict[str, Any],
        extra: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> int: ...

    def restore(self, template: TrainState, step: Any = None) -> tuple[TrainState, dict]: ...


@runtime_checkable
class MetricsLoggerLike(Protocol):
    """What :func:`fit` needs of a logger (:class:`rnn_jax.progress.MetricsLogger`)."""

    def log(self, step: int, split: str, metrics: dict[str, float], **fields: Any) -> None: ...

    def truncate_after(self, step: int) -> None: ...

    def flush(self) -> None: ...


#: fit syncs with the host at least this often to read the non-finite flags.
_MAX_PENDING = 100
#: fit warns when the loss exceeds the first one read by this factor.
_DIVERGENCE_FACTOR = 100.0


class _SignalCatcher:
    """Turns the first SIGTERM/SIGINT into a flag; a second one acts at once (old handler)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalCatcher:
        if self.enabled:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self._restore()  # a second signal: default behaviour (KeyboardInterrupt, exit)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._restore()


@dataclasses.dataclass
class _Settings:
    num_epochs: int
    steps_per_epoch: int
    eval_every: int
    log_every: int
    checkpoint_every: int | None
    checkpoint_extra: dict[str, Any] | None
    restore_best: bool
    progress: bool

    @property
    def total_steps(self) -> int:
        return self.num_epochs * self.steps_per_epoch


@dataclasses.dataclass
class _Run:
    """The mutable state of one :func:`fit` call, and the loop's small steps."""

    settings: _Settings
    state: TrainState
    train_step: TrainStep
    evaluate_fn: Callable[[PyTree], dict[str, float]] | None
    early_stopping: EarlyStopping | None
    checkpointer: CheckpointerLike | None
    logger: MetricsLoggerLike | None
    start_time: float = dataclasses.field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0
    epoch: int = 0
    position: int = 0
    finished: bool = False
    resumed_from: int | None = None
    es_state: EarlyStoppingState = EarlyStoppingState()
    best_metrics: dict[str, float] | None = None
    best_state: TrainState | None = None
    saved_step: int | None = None
    pending: list[tuple[int, Array, Array]] = dataclasses.field(default_factory=list)
    metrics: dict[str, Array] = dataclasses.field(default_factory=dict)
    first_loss: tuple[int, float] | None = None
    last_loss: float | None = None
    warned: bool = False
    step: int = 0

    # ------------------------------------------------------------ resume
    def resume(self) -> None:
        ckpt = self.checkpointer
        self.step = int(self.state.step)
        if ckpt is None or ckpt.latest_step() is None:
            return
        self.state, meta = ckpt.restore(self.state)
        self.resumed_from = self.step = self.saved_step = int(self.state.step)
        self.epoch, self.position = int(meta["epoch"]), int(meta["position"])
        self.finished = bool(meta.get("finished", False))
        stored = meta.get("best_metrics")
        self.best_metrics = (
            None if stored is None else {k: v for k, v in stored.items() if k != "step"}
        )
        self.elapsed_before = float(meta.get("elapsed_seconds", 0.0))
        if meta.get("early_stopping") is not None:
            self.es_state = EarlyStoppingState(**meta["early_stopping"])
        if self.logger is not None:
            self.logger.truncate_after(self.resumed_from)
        self.start_time = time.perf_counter()  # the restore is not training time

    # ------------------------------------------------------------ one step
    def stopped_early(self) -> bool:
        es = self.early_stopping
        return es is not None and es.should_stop(self.es_state)

    def done(self) -> bool:
        return self.finished or self.stopped_early() or self.epoch >= self.settings.num_epochs

    def take_step(self, batch: Any) -> None:
        self.state, self.metrics = self.train_step(self.state, batch)
        self.step += 1
        finite = self.metrics.get("finite")
        if finite is None:  # a hand-written train step: the loss alone
            finite = jnp.isfinite(self.metrics["loss"])
        self.pending.append((self.step, finite, self.metrics["loss"]))
        self.position += 1
        if self.position >= self.settings.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0

    def after_step(self, bar: ProgressBar) -> bool:
        """Logs, evaluates and checkpoints as due; returns whether training is over."""
        s, step = self.settings, self.step
        last = step == s.total_steps
        log_due = step % s.log_every == 0 or last
        read_due = log_due and (self.logger is not None or s.progress)
        log_due = log_due and self.logger is not None
        eval_due = self.evaluate_fn is not None and (step % s.eval_every == 0 or last)
        ckpt_due = s.checkpoint_every is not None and step % s.checkpoint_every == 0
        if read_due or eval_due or ckpt_due or last or len(self.pending) >= _MAX_PENDING:
            self.sync()
        bar.update(loss=self.last_loss if not self.pending else None)
        if log_due:
            self.log_train()
        eval_metrics = self.run_evaluation(bar) if eval_due else None
        done = self.done()
        if eval_metrics is not None or done or ckpt_due:
            self.save(metrics=eval_metrics, finished=done)
        return done

    # ------------------------------------------------------------ host syncs
    def sync(self) -> None:
        """Reads the pending finite flags and losses (one transfer); raises on a bad step."""
        if not self.pending:
            return
        steps = [p[0] for p in self.pending]
        flags = np.asarray(jnp.stack([p[1] for p in self.pending]))
        losses = np.asarray(jnp.stack([jnp.asarray(p[2], jnp.float32) for p in self.pending]))
        self.pending = []
        if not flags.all():
            i = int(np.argmin(flags))
            self.raise_non_finite(steps[i], float(losses[i]))
        if self.first_loss is None:
            self.first_loss = (steps[0], float(losses[0]))
        self.last_loss = float(losses[-1])
        self.check_divergence(steps[-1], self.last_loss)

    def raise_non_finite(self, bad_step: int, loss: float) -> None:
        spe = self.settings.steps_per_epoch
        epoch, batch = divmod(bad_step - 1, spe)
        what = (
            f"the training loss is {loss}"
            if not math.isfinite(loss)
            else f"the training gradient or updated parameters are not finite (loss {loss:.6g})"
        )
        last = None if self.checkpointer is None else self.checkpointer.latest_step()
        raise NonFiniteLossError(
            f"{what} at step {bad_step} (epoch {epoch}, batch {batch}); training stopped. The "
            f"update was skipped and nothing after it was saved; the last good checkpoint is "
            f"step {last}. Lower the learning rate, tighten gradient clipping, or check the "
            "data of this batch.",
            step=bad_step,
        )

    def check_divergence(self, step: int, loss: float) -> None:
        assert self.first_loss is not None
        step0, loss0 = self.first_loss
        if not self.warned and loss0 > 0 and loss >= _DIVERGENCE_FACTOR * loss0:
            self.warned = True
            warnings.warn(
                f"the training loss grew from {loss0:.4g} (step {step0}) to {loss:.4g} (step "
                f"{step}), {loss / loss0:.3g} times: training is diverging. The usual cause is "
                "a learning rate that is too high (try 10 times lower) or too little "
                "gradient clipping.",
                TrainingDivergedWarning,
                stacklevel=4,
            )

    def log_train(self) -> None:
        assert self.logger is not None
        values = {k: float(np.asarray(v)) for k, v in self.metrics.items() if k != "finite"}
        self.logger.log(self.step, "train", values, epoch=self.epoch)

    def run_evaluation(self, bar: ProgressBar) -> dict[str, float]:
        assert self.evaluate_fn is not None
        metrics = {k: float(v) for k, v in self.evaluate_fn(self.state.params).items()}
        es = self.early_stopping
        if es is not None:
            if es.metric not in metrics:
                raise ValueError(
                    f"`early_stopping.metric` = {es.metric!r} is not among the metrics of "
                    f"`evaluate_fn`: {sorted(metrics)}."
                )
            self.es_state = es.update(self.es_state, metrics[es.metric], self.step)
            if self.es_state.best_step == self.step:
                self.best_metrics = metrics
                self.best_state = self.state if self.settings.restore_best else None
        if self.logger is not None:
            self.logger.log(self.step, "val", metrics, epoch=self.epoch)
        bar.set_postfix_metrics(metrics, keys=() if es is None else ("loss", es.metric))
        return metrics

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    def save(self, *, metrics: dict[str, float] | None = None, finished: bool = False) -> None:
        """Checkpoints the current state (after reading every pending finite flag)."""
        if self.checkpointer is None or self.saved_step == self.step:
            return
        self.sync()
        meta = {
            "epoch": self.epoch,
            "position": self.position,
            "finished": finished,
            "best_metrics": self.best_metrics,
            "elapsed_seconds": self.elapsed(),
            "early_stopping": self.es_state._asdict(),
        }
        self.checkpointer.save(
            self.state, meta=meta, extra=self.settings.checkpoint_extra, metrics=metrics
        )
        self.saved_step = self.step

    # ------------------------------------------------------------ the end
    def interrupt(self, signum: int) -> None:
        self.save(finished=self.done())
        raise TrainingInterrupted(signum, self.step, saved=self.checkpointer is not None)

    def best_or_final(self) -> TrainState:
        best = self.es_state.best_step
        if not self.settings.restore_best or best is None or best == int(self.state.step):
            return self.state
        if self.best_state is not None and int(self.best_state.step) == best:
            return self.best_state
        if self.checkpointer is not None and best in self.checkpointer.all_steps():
            return self.checkpointer.restore(self.state, step=best)[0]
        warnings.warn(
            f"the best state (step {best}) is neither in memory nor checkpointed; returning the "
            f"final state (step {int(self.state.step)}).",
            RuntimeWarning,
            stacklevel=3,
        )
        return self.state

    def result(self) -> FitResult:
        self.sync()
        return FitResult(
            state=self.best_or_final(),
            best_step=self.es_state.best_step if self.early_stopping is not None else None,
            best_metrics=self.best_metrics,
            stopped_early=self.stopped_early(),
            resumed_from=self.resumed_from,
            train_seconds=self.elapsed(),
            last_step=int(self.state.step),
        )


def _train_loop(
    run: _Run,
    epoch_batches: Callable[[int, int], Iterator[Any]],
    bar: ProgressBar,
    signals: _SignalCatcher,
) -> None:
    while not run.done():
        for batch in epoch_batches(run.epoch, run.position):
            run.take_step(batch)
            if run.after_step(bar) or signals.signum is not None:
                break
        else:
            if run.position != 0:
                raise ValueError(
                    f"`epoch_batches({run.epoch}, ...)` yielded fewer batches than "
                    f"`steps_per_epoch` = {run.settings.steps_per_epoch}; they must agree."
                )
        if signals.signum is not None and not run.done():
            run.interrupt(signals.signum)


def fit(
    state: TrainState,
    train_step: TrainStep,
    epoch_batches: Callable[[int, int], Iterator[Any]],
    *,
    num_epochs: int,
    steps_per_epoch: int,
    evaluate_fn: Callable[[PyTree], dict[str, float]] | None = None,
    eval_every: int | None = None,
    early_stopping: EarlyStopping | None = None,
    restore_best: bool | None = None,
    checkpointer: CheckpointerLike | None = None,
    checkpoint_every: int | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    logger: MetricsLoggerLike | None = None,
    progress: bool = True,
    log_every: int = 10,
    description: str = "train",
    handle_signals: bool = True,
) -> FitResult:
    """The training loop: resume, train, evaluate, checkpoint, stop, return the best state.

    Data order is a pure function of ``(epoch, position)``: ``epoch_batches(epoch, start)``
    must yield the batches ``start, start + 1, ...`` of that epoch, the same ones on every
    call (derive the shuffle from ``fold_in(data_key, epoch)`` and pass ``start`` to
    :func:`rnn_jax.batching.iterate_batches`). The data position after step ``s`` is saved
    with the state, and the step key is ``fold_in(state.key, step)``; therefore a run
    killed at any moment and restarted resumes from its latest checkpoint and ends with
    parameters bit-identical to an uninterrupted run (same machine and versions).

    Order of work at each step: take a batch, ``train_step``, then, when due, read the
    pending ``finite`` flags (see :func:`make_train_step`; read on logged, evaluated and
    checkpointed steps and at least every 100 steps, never every step), log, evaluate,
    checkpoint. A non-finite loss or gradient raises :class:`NonFiniteLossError` naming its
    step before anything after it is saved, so the latest checkpoint stays the last good
    one. Everything belonging to a step is saved in one atomic checkpoint.

    Signals (``handle_signals``, main thread only): on the first SIGTERM or SIGINT the
    current step is finished, a checkpoint is written (if there is a checkpointer) and
    :class:`TrainingInterrupted` is raised (its ``exit_code`` is ``128 + signum``); a
    second signal acts at once with the handler that was there before ``fit`` (by default
    SIGINT raises ``KeyboardInterrupt``; where the process was started with the signal
    ignored, as a non-interactive shell starts background jobs with SIGINT, the second one
    is ignored too). The previous handlers are restored when ``fit`` returns or raises.

    Args:
        state: the initial state (used when there is no checkpoint to resume from; it is
            also the template the checkpoint is restored into).
        train_step: from :func:`make_train_step`.
        epoch_batches: ``(epoch, start) -> iterator`` over the rest of the epoch.
        num_epochs: epochs to train.
        steps_per_epoch: batches per epoch (``len`` of a full epoch).
        evaluate_fn: ``params -> dict`` of validation metrics, or ``None``.
        eval_every: evaluate every this many steps; ``None``: at the end of each epoch.
        early_stopping: an :class:`EarlyStopping` on a metric of ``evaluate_fn``; it also
            decides the best state, and the checkpointer keeps that step's checkpoint
            (:meth:`~rnn_jax.checkpoint.Checkpointer.keep_best`).
        restore_best: return the best state (as Keras' ``restore_best_weights``);
            ``None``: ``True`` exactly when ``early_stopping`` is given.
        checkpointer: a :class:`rnn_jax.checkpoint.Checkpointer` or ``None``.
        checkpoint_every: also checkpoint every this many steps (evaluations and the end of
            training are always checkpointed); ``None``: only those.
        checkpoint_extra: JSON stored in every checkpoint (e.g.
            ``{"vocab": vocab.to_json_dict()}``).
        logger: a :class:`rnn_jax.progress.MetricsLogger` or ``None``.
        progress: show a progress bar (loss, step rate, ETA).
        log_every: write a training-metrics record every this many steps.
        description: the progress bar's label.
        handle_signals: catch SIGTERM/SIGINT as above.

    Returns:
        A :class:`FitResult`.

    Raises:
        NonFiniteLossError: the loss or the gradient became NaN or inf.
        TrainingInterrupted: SIGTERM or SIGINT was received (after checkpointing).
        rnn_jax.checkpoint.CheckpointError: a checkpoint could not be read or written.

    Warns:
        TrainingDivergedWarning: once, when the loss read grows 100 times over the first.
    """
    from rnn_jax.progress import ProgressBar  # local: keeps the core free of tqdm

    if num_epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"`num_epochs` and `steps_per_epoch` must be positive, got {num_epochs}, {steps_per_epoch}."
        )
    if restore_best is None:
        restore_best = early_stopping is not None
    settings = _Settings(
        num_epochs=num_epochs,
        steps_per_epoch=steps_per_epoch,
        eval_every=steps_per_epoch if eval_every is None else int(eval_every),
        log_every=int(log_every),
        checkpoint_every=checkpoint_every,
        checkpoint_extra=checkpoint_extra,
        restore_best=restore_best,
        progress=progress,
    )
    if checkpointer is not None and early_stopping is not None:
        checkpointer.keep_best(early_stopping.metric, early_stopping.mode)
    run = _Run(settings, state, train_step, evaluate_fn, early_stopping, checkpointer, logger)
    run.resume()
    bar = ProgressBar(
        total=settings.total_steps, initial=run.step, enabled=progress, description=description
    )
    try:
        with _SignalCatcher(handle_signals) as signals:
            _train_loop(run, epoch_batches, bar, signals)
    finally:
        bar.close()
    if logger is not None:
        logger.flush()
    return run.result()
