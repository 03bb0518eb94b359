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
- :class:`EarlyStopping` tracks a validation metric;
- :func:`fit` is the loop: resumes from the latest checkpoint, logs, evaluates, checkpoints,
  stops early, and stops with :class:`NonFiniteLossError` on a NaN/inf loss without
  writing the bad state.

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
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Int

__all__ = [
    "EarlyStopping",
    "FitResult",
    "NonFiniteLossError",
    "TrainState",
    "default_optimizer",
    "evaluate",
    "fit",
    "init_train_state",
    "make_train_step",
]

PyTree = Any
LossFn = Callable[..., Any]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the bad update was not kept or saved."""


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
        >>> state = opt.init(jnp.zeros(2))
        >>> updates, _ = opt.update(jnp.array([300.0, 400.0]), state, jnp.zeros(2))
        >>> updates.shape
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
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, Array]]]:
    """Builds ``train_step(state, batch) -> (new_state, metrics)``.

    Args:
        loss_fn: ``loss_fn(params, batch, *, key) -> loss`` (a scalar), or
            ``-> (loss, aux)`` with ``has_aux=True`` where ``aux`` is a dict of scalars that
            are returned in ``metrics``. ``key`` is ``fold_in(state.key, state.step)``.
        optimizer: any ``optax.GradientTransformation``.
        has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
        jit: compile the step with ``jax.jit`` (one compile per distinct batch shape).

    Returns:
        The step function. ``metrics`` holds ``loss``, ``grad_norm`` (before clipping) and
        the ``aux`` entries. The step does not check the loss for NaN (that would need a
        host sync); :func:`fit` does, before it keeps the new state.
    """

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, Array]]:
        key = jax.random.fold_in(state.key, state.step)

        def objective(params):
            out = loss_fn(params, batch, key=key)
            return out if has_aux else (out, {})

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **dict(aux)}
        return TrainState(params, opt_state, state.step + 1, state.key), metrics

    return jax.jit(train_step) if jit else train_step


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


@dataclasses.dataclass
class EarlyStopping:
    """Stop when a validation metric has not improved for ``patience`` evaluations.

    Attributes:
        metric: the name of the metric in the evaluation dict (e.g. ``"f1"``).
        mode: ``"max"`` (higher is better) or ``"min"``.
        patience: evaluations without improvement before stopping (``None``: never stop,
            but still track the best).
        min_delta: an improvement must exceed this.
        best: the best value so far (``None`` before the first evaluation).
        best_step: the step of the best value.
        num_bad: evaluations since the last improvement.

    Example:
        >>> es = EarlyStopping("f1", mode="max", patience=2)
        >>> [es.update(v, step=s) for s, v in enumerate([0.5, 0.7, 0.6, 0.65])]
        [True, True, False, False]
        >>> es.should_stop, es.best, es.best_step
        (True, 0.7, 1)
    """

    metric: str
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    num_bad: int = 0

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min', got {self.mode!r}.")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"`patience` must be a positive int or None, got {self.patience!r}.")

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float, *, step: int) -> bool:
        """Records one evaluation; returns whether it is a new best."""
        value = float(value)
        if not math.isfinite(value):
            self.num_bad += 1
            return False
        if self.is_better(value):
            self.best, self.best_step, self.num_bad = value, int(step), 0
            return True
        self.num_bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.num_bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "num_bad": self.num_bad}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best, self.best_step, self.num_bad = d["best"], d["best_step"], int(d["num_bad"])


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        state: the final train state (after the last step taken).
        best_step: step of the best validation metric (``None`` without evaluation).
        best_metrics: validation metrics at ``best_step``.
        stopped_early: whether early stopping ended the run.
        resumed_from: the checkpoint step the run resumed from (``None``: started fresh).
        train_seconds: wall time of training (evaluations included), summed over all the
            calls that resumed this run.
    """

    state: TrainState
    best_step: int | None
    best_metrics: dict[str, float] | None
    stopped_early: bool
    resumed_from: int | None
    train_seconds: float


def _to_float(x: Any) -> float:
    return float(np.asarray(x))


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict[str, Array]]],
    epoch_batches: Callable[[int, int], Iterator[Any]],
    *,
    num_epochs: int,
    steps_per_epoch: int,
    evaluate_fn: Callable[[PyTree], dict[str, float]] | None = None,
    eval_every: int | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpointer: Any = None,
    checkpoint_every: int | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    logger: Any = None,
    progress: bool = True,
    log_every: int = 10,
    description: str = "train",
) -> FitResult:
    """The training loop: resume, train, evaluate, checkpoint, stop.

    Data order is a pure function of ``(epoch, position)``: ``epoch_batches(epoch, start)``
    must yield the batches ``start, start + 1, ...`` of that epoch, the same ones on every
    call (derive the shuffle from ``fold_in(data_key, epoch)`` and pass ``start`` to
    :func:`rnn_jax.batching.iterate_batches`). The data position after step ``s`` is saved
    with the state, and the step key is ``fold_in(state.key, step)``; therefore a run
    killed at any moment and restarted resumes from its latest checkpoint and ends with
    parameters bit-identical to an uninterrupted run (same machine and versions).

    Order of work at each step: take a batch, ``train_step``, check the loss is finite
    (else raise :class:`NonFiniteLossError`; the new state is discarded and nothing is
    saved, so the latest checkpoint stays the last good one), log, evaluate if due,
    checkpoint if due. Everything belonging to a step is saved in one atomic checkpoint.

    Args:
        state: the initial state (used when there is no checkpoint to resume from; it is
            also the template the checkpoint is restored into).
        train_step: from :func:`make_train_step`.
        epoch_batches: ``(epoch, start) -> iterator`` over the rest of the epoch.
        num_epochs: epochs to train.
        steps_per_epoch: batches per epoch (``len`` of a full epoch).
        evaluate_fn: ``params -> dict`` of validation metrics, or ``None``.
        eval_every: evaluate every this many steps; ``None``: at the end of each epoch.
        early_stopping: an :class:`EarlyStopping` on a metric of ``evaluate_fn``; also
            decides which checkpoint is "best".
        checkpointer: a :class:`rnn_jax.checkpoint.Checkpointer` or ``None``.
        checkpoint_every: also checkpoint every this many steps (evaluations and the end of
            training are always checkpointed); ``None``: only those.
        checkpoint_extra: JSON stored in every checkpoint (e.g.
            ``{"vocab": vocab.to_json_dict()}``).
        logger: a :class:`rnn_jax.progress.MetricsLogger` or ``None``.
        progress: show a progress bar (loss, step rate, ETA).
        log_every: write a training-metrics record every this many steps.
        description: the progress bar's label.

    Returns:
        A :class:`FitResult`.

    Raises:
        NonFiniteLossError: the loss became NaN or inf.
    """
    from rnn_jax.progress import ProgressBar  # local: keeps the core free of tqdm

    if num_epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"`num_epochs` and `steps_per_epoch` must be positive, got {num_epochs}, {steps_per_epoch}."
        )
    total_steps = num_epochs * steps_per_epoch
    eval_every = steps_per_epoch if eval_every is None else int(eval_every)
    epoch, position = 0, 0
    resumed_from = None
    best_metrics: dict[str, float] | None = None
    finished = False
    elapsed_before = 0.0
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        resumed_from = int(state.step)
        epoch, position = int(meta["epoch"]), int(meta["position"])
        finished = bool(meta.get("finished", False))
        best_metrics = meta.get("best_metrics")
        elapsed_before = float(meta.get("elapsed_seconds", 0.0))
        if early_stopping is not None and meta.get("early_stopping") is not None:
            early_stopping.load_state_dict(meta["early_stopping"])
        if logger is not None:
            logger.truncate_after(resumed_from)

    def save(state, *, metrics=None, finished=False):
        if checkpointer is None:
            return
        meta = {
            "epoch": epoch,
            "position": position,
            "finished": finished,
            "best_metrics": best_metrics,
            "elapsed_seconds": elapsed_before + time.perf_counter() - start_time,
            "early_stopping": None if early_stopping is None else early_stopping.state_dict(),
        }
        checkpointer.save(state, meta=meta, extra=checkpoint_extra, metrics=metrics)

    stopped_early = early_stopping is not None and early_stopping.should_stop
    start_time = time.perf_counter()
    step = int(state.step)
    bar = ProgressBar(total=total_steps, initial=step, enabled=progress, description=description)
    try:
        while not finished and not stopped_early and epoch < num_epochs:
            for batch in epoch_batches(epoch, position):
                new_state, metrics = train_step(state, batch)
                loss = _to_float(metrics["loss"])
                if not math.isfinite(loss):
                    last = None if checkpointer is None else checkpointer.latest_step()
                    raise NonFiniteLossError(
                        f"the training loss is {loss} at step {step + 1} (epoch {epoch}, batch "
                        f"{position}); training stopped. The update was discarded and not saved; "
                        f"the last good checkpoint is step {last}. Lower the learning rate, "
                        "tighten gradient clipping, or check the data of this batch."
                    )
                state = new_state
                step += 1
                position += 1
                if position >= steps_per_epoch:
                    epoch, position = epoch + 1, 0
                bar.update(loss=loss)
                if logger is not None and (step % log_every == 0 or step == total_steps):
                    logger.log(
                        step,
                        "train",
                        {k: _to_float(v) for k, v in metrics.items()},
                        epoch=epoch,
                    )
                eval_metrics = None
                if evaluate_fn is not None and (step % eval_every == 0 or step == total_steps):
                    eval_metrics = {k: float(v) for k, v in evaluate_fn(state.params).items()}
                    if early_stopping is not None:
                        if early_stopping.update(eval_metrics[early_stopping.metric], step=step):
                            best_metrics = {**eval_metrics, "step": step}
                        stopped_early = early_stopping.should_stop
                    if logger is not None:
                        logger.log(step, "val", eval_metrics, epoch=epoch)
                    bar.set_postfix_metrics(
                        eval_metrics,
                        keys=() if early_stopping is None else ("loss", early_stopping.metric),
                    )
                done = stopped_early or epoch >= num_epochs
                due = checkpoint_every is not None and step % checkpoint_every == 0
                if eval_metrics is not None or done or due:
                    save(state, metrics=eval_metrics, finished=done)
                if done:
                    break
            else:
                if position != 0:
                    raise ValueError(
                        f"`epoch_batches({epoch}, ...)` yielded fewer batches than "
                        f"`steps_per_epoch` = {steps_per_epoch}; they must agree."
                    )
    finally:
        bar.close()
    if logger is not None:
        logger.flush()
    return FitResult(
        state=state,
        best_step=None if early_stopping is None else early_stopping.best_step,
        best_metrics=best_metrics,
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        train_seconds=elapsed_before + time.perf_counter() - start_time,
    )
