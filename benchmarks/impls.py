"""The implementations under test, each written the way its users would write it.

Each builder takes a :class:`~benchmarks.workloads.Workload` and returns an
:class:`Impl`: ``forward()`` computes the loss without gradients, ``train()`` runs one
step (forward, backward, Adam update, parameters updated in place / donated), and
``compile_s`` is the time to compile both (0 for eager PyTorch; its first call is
recorded instead). Every callable returns only after the work is done.

- ``rnn_jax``: :func:`rnn_jax.rnn_apply` + masked cross-entropy, ``optax.adam``.
- ``flax``: ``nn.Embed`` (token ids) -> ``nn.RNN(nn.SimpleCell)`` (``nn.Bidirectional``
  for W5, ``seq_lengths`` for padding) -> ``nn.Dense``, ``optax.adam``.
- ``haiku``: ``hk.Embed`` -> ``hk.dynamic_unroll(hk.VanillaRNN)`` (tanh) -> ``hk.Linear``;
  Haiku has no length argument, so padding is handled by the loss mask only (and the
  backward direction of W5 reads the padding: the same work, a slightly different
  function).
- ``torch``: ``nn.Embedding`` -> ``nn.RNN`` (``pack_padded_sequence`` for variable
  lengths) -> ``nn.Linear``, ``torch.optim.Adam``, ``torch.set_num_threads(cores)``.

Peers' embeddings have width ``H`` (the same ``V x H`` parameters as rnn_jax's ``W_ax``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from benchmarks.workloads import Workload

LEARNING_RATE = 1e-3


@dataclasses.dataclass
class Impl:
    name: str
    forward: Callable[[], float]
    train: Callable[[], float]
    compile_s: float
    xla_bytes: int | None = None  # XLA's own count of the train step's buffers


def _masked_ce(logits, labels, lengths):
    import jax.numpy as jnp
    import optax

    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if lengths is None:
        return jnp.mean(ce)
    mask = jnp.arange(labels.shape[1])[None, :] < lengths[:, None]
    return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _jax_impl(name, w: Workload, params, logits_fn) -> Impl:
    """Shared JAX driver: jit the loss and a donated Adam step, compile ahead of time."""
    import jax
    import optax

    xs, labels, lengths = (None if a is None else jax.device_put(a) for a in w.data())
    opt = optax.adam(LEARNING_RATE)
    opt_state = opt.init(params)

    def loss_fn(params, xs, labels, lengths):
        return _masked_ce(logits_fn(params, xs, lengths), labels, lengths)

    def train_step(params, opt_state, xs, labels, lengths):
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, labels, lengths)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    t0 = time.perf_counter()
    fwd = jax.jit(loss_fn).lower(params, xs, labels, lengths).compile()
    step = (
        jax.jit(train_step, donate_argnums=(0, 1))
        .lower(params, opt_state, xs, labels, lengths)
        .compile()
    )
    compile_s = time.perf_counter() - t0
    mem = step.memory_analysis()
    xla_bytes = None
    if mem is not None:
        xla_bytes = int(
            mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
        )
    state = {"params": params, "opt_state": opt_state}

    def forward():
        return float(fwd(state["params"], xs, labels, lengths))

    def train():
        state["params"], state["opt_state"], loss = step(
            state["params"], state["opt_state"], xs, labels, lengths
        )
        return float(loss)

    return Impl(name, forward, train, compile_s, xla_bytes)


def _rnn_jax_params(w: Workload):
    import jax

    import rnn_jax

    return rnn_jax.init_rnn(
        jax.random.key(0),
        w.input_size,
        w.H,
        w.C,
        num_layers=w.layers,
        bidirectional=w.bidirectional,
        token_inputs=w.D is None,
    )


def build_rnn_jax(
    w: Workload, *, name: str = "rnn_jax", backward: str = "bptt", lookup: str = "sorted"
) -> Impl:
    """rnn_jax; ``backward="autodiff"`` / ``lookup="take"`` are the library's own options
    (the ablations: ``jax.grad`` of the ``lax.scan``, a plain ``jnp.take`` lookup)."""
    import rnn_jax

    params = _rnn_jax_params(w)

    def logits_fn(params, xs, lengths):
        return rnn_jax.rnn_apply(params, xs, lengths, backward=backward, lookup=lookup)

    return _jax_impl(name, w, params, logits_fn)


def build_rnn_jax_dp(w: Workload) -> Impl:
    """rnn_jax with the batch split over every JAX device (:mod:`rnn_jax.parallel`).

    On a CPU this needs the process to expose several CPU devices
    (``python -m benchmarks.run --cpu-devices N``); the training step is the library's
    :func:`~rnn_jax.parallel.make_parallel_train_step` (per-shard masked means weighted by
    their valid tokens: the same loss and gradient as the whole batch on one device),
    the forward :func:`~rnn_jax.parallel.parallel_sums` of the masked loss sum and count.
    """
    import jax
    import jax.numpy as jnp
    import optax

    import rnn_jax
    from rnn_jax.parallel import batch_mesh, make_parallel_train_step, parallel_sums, shard_batch
    from rnn_jax.train import init_train_state

    mesh = batch_mesh()
    if len(mesh.devices.ravel()) < 2:
        raise RuntimeError("rnn_jax_dp needs several devices (run with --cpu-devices N)")
    params = _rnn_jax_params(w)
    xs, labels, lengths = w.data()
    if lengths is None:
        lengths = np.full((w.B,), w.T, np.int32)
    batch = shard_batch((xs, labels, lengths), mesh)
    opt = optax.adam(LEARNING_RATE)

    def sums(params, batch):
        xs, labels, lengths = batch
        logits = rnn_jax.rnn_apply(params, xs, lengths)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        mask = jnp.arange(labels.shape[1])[None, :] < lengths[:, None]
        return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(mask).astype(ce.dtype)

    def loss_fn(params, batch, *, key):
        s, n = sums(params, batch)
        return s / jnp.maximum(n, 1.0)

    t0 = time.perf_counter()
    step = make_parallel_train_step(loss_fn, opt, mesh, weight_fn=lambda b: jnp.sum(b[2]))
    fwd_sums = parallel_sums(sums, mesh)
    state = {"s": init_train_state(params, opt, key=jax.random.key(0))}
    state["s"], _ = step(state["s"], batch)  # compiles (the first step is not timed)
    jax.block_until_ready(fwd_sums(state["s"].params, batch))
    compile_s = time.perf_counter() - t0

    def forward():
        s, n = fwd_sums(state["s"].params, batch)
        return float(s / n)

    def train():
        state["s"], metrics = step(state["s"], batch)
        return float(metrics["loss"])

    return Impl("rnn_jax_dp", forward, train, compile_s)


def build_flax(w: Workload) -> Impl:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs, lengths):
            h = nn.Embed(w.V, w.H)(xs) if w.D is None else xs
            for _ in range(w.layers):
                if w.bidirectional:
                    h = nn.Bidirectional(nn.RNN(nn.SimpleCell(w.H)), nn.RNN(nn.SimpleCell(w.H)))(
                        h, seq_lengths=lengths
                    )
                else:
                    h = nn.RNN(nn.SimpleCell(w.H))(h, seq_lengths=lengths)
            return nn.Dense(w.C)(h)

    model = Model()
    xs, _, lengths = w.data()
    params = model.init(
        jax.random.key(0), jnp.asarray(xs), None if lengths is None else jnp.asarray(lengths)
    )
    return _jax_impl("flax", w, params, lambda p, xs, lengths: model.apply(p, xs, lengths))


def build_haiku(w: Workload) -> Impl:
    import haiku as hk
    import jax
    import jax.numpy as jnp

    def net(xs, lengths):
        h = hk.Embed(w.V, w.H)(xs) if w.D is None else xs
        h = jnp.swapaxes(h, 0, 1)  # time-major, as dynamic_unroll wants
        B = h.shape[1]
        for _ in range(w.layers):
            outs = []
            for reverse in (False, True) if w.bidirectional else (False,):
                core = hk.VanillaRNN(w.H)
                a, _ = hk.dynamic_unroll(core, h, core.initial_state(B), reverse=reverse)
                outs.append(a)
            h = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
        return jnp.swapaxes(hk.Linear(w.C)(h), 0, 1)

    model = hk.without_apply_rng(hk.transform(net))
    xs, _, lengths = w.data()
    params = model.init(jax.random.key(0), jnp.asarray(xs), lengths)
    return _jax_impl("haiku", w, params, model.apply)


def build_torch(w: Workload) -> Impl:
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    # benchmarks/gpu_check.sh sets cuda (cuDNN nn.RNN); float(loss) synchronises.
    device = torch.device(os.environ.get("RNN_JAX_BENCH_DEVICE", "cpu"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(w.V, w.H) if w.D is None else None
            self.rnn = nn.RNN(
                w.H if w.D is None else w.D,
                w.H,
                num_layers=w.layers,
                bidirectional=w.bidirectional,
                nonlinearity="tanh",
                batch_first=True,
            )
            self.head = nn.Linear(w.H * (2 if w.bidirectional else 1), w.C)

        def forward(self, xs, lengths):
            h = self.embed(xs) if self.embed is not None else xs
            if lengths is None:
                h, _ = self.rnn(h)
            else:
                packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
                h, _ = self.rnn(packed)
                h, _ = pad_packed_sequence(h, batch_first=True, total_length=w.T)
            return self.head(h)

    xs_np, labels_np, lengths_np = w.data()
    xs = torch.from_numpy(xs_np.astype(np.int64) if w.D is None else xs_np)
    labels = torch.from_numpy(labels_np.astype(np.int64))
    lengths = None if lengths_np is None else torch.from_numpy(lengths_np.astype(np.int64))
    mask = (
        None
        if lengths is None
        else (torch.arange(w.T)[None, :] < lengths[:, None]).reshape(-1).float().to(device)
    )
    xs, labels = xs.to(device), labels.to(device)  # lengths stay on the CPU (packing wants that)
    model = Model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    ce = nn.CrossEntropyLoss(reduction="none")

    def loss_fn():
        logits = model(xs, lengths)
        per_step = ce(logits.reshape(-1, w.C), labels.reshape(-1))
        if mask is None:
            return per_step.mean()
        return (per_step * mask).sum() / mask.sum().clamp(min=1)

    def forward():
        with torch.no_grad():
            return float(loss_fn())

    def train():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return float(loss)

    t0 = time.perf_counter()
    forward()
    train()
    first_call_s = time.perf_counter() - t0
    return Impl("torch", forward, train, first_call_s)


BUILDERS: dict[str, Callable[[Workload], Impl]] = {
    "rnn_jax": build_rnn_jax,
    "flax": build_flax,
    "haiku": build_haiku,
    "torch": build_torch,
    "rnn_jax_dp": build_rnn_jax_dp,
}
ABLATIONS: dict[str, Callable[[Workload], Impl]] = {
    "rnn_jax[autodiff]": partial(build_rnn_jax, name="rnn_jax[autodiff]", backward="autodiff"),
}
