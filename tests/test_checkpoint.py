"""Tests of rnn_jax.checkpoint: round trip, retention, config mismatch, corruption, atomicity."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnn_jax.checkpoint as ckpt_mod
from rnn_jax import init_rnn
from rnn_jax.checkpoint import (
    Checkpointer,
    CheckpointError,
    ConfigMismatchError,
    CorruptCheckpointError,
    RunDirectoryInUseError,
    TemplateMismatchError,
    config_diff,
)
from rnn_jax.train import default_optimizer, init_train_state, make_train_step


def _leaves(tree):
    out = []
    for x in jax.tree_util.tree_leaves(tree):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def _state(step: int = 0):
    params = init_rnn(jax.random.key(0), 30, 6, 1, bidirectional=True, token_inputs=True)
    opt = default_optimizer(1e-2, warmup_steps=2, total_steps=20)
    state = init_train_state(params, opt, key=jax.random.key(5))
    if step:

        def loss_fn(p, batch, *, key):
            return jnp.sum(p.head.W_y**2) + jnp.sum(p.layers[0][0].W_a ** 2)

        train_step = make_train_step(loss_fn, opt)
        for _ in range(step):
            state, _ = train_step(state, None)
    return state


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_round_trip_is_bit_identical_with_meta_and_extra(tmp_path):
    state = _state(step=3)
    with Checkpointer(tmp_path, config={"hidden": 6, "models": ("rnn",)}) as ckpt:
        ckpt.save(
            state,
            meta={"epoch": 1, "position": 7},
            extra={"vocab": {"tokens": ["<PAD>", "a"]}},
        )
        restored, meta = ckpt.restore(_state())
    assert int(restored.step) == 3
    assert type(restored.params) is type(state.params)
    assert restored.params.bidirectional and restored.params.token_inputs
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    for a, b in zip(_leaves(restored), _leaves(state), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert meta["epoch"] == 1 and meta["position"] == 7
    assert meta["config"] == {"hidden": 6, "models": ["rnn"]}
    assert meta["extra"] == {"vocab": {"tokens": ["<PAD>", "a"]}}


def test_keeps_the_last_n_and_the_best(tmp_path):
    state = _state()
    f1 = {2: 0.9, 4: 0.3, 6: 0.5}
    with Checkpointer(tmp_path, config={}, max_to_keep=2, best_metric="f1") as ckpt:
        for step in range(1, 8):
            ckpt.save(
                state._replace(step=jnp.int32(step)),
                meta={"epoch": 0, "position": step},
                metrics={"f1": f1[step]} if step in f1 else None,
            )
        assert ckpt.all_steps() == [2, 6, 7]
        assert ckpt.best_step() == 2
        restored, meta = ckpt.restore(state, step=2)
        assert int(restored.step) == 2 and meta["position"] == 2


def test_min_mode_best(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={}, max_to_keep=1, best_metric="loss", best_mode="min") as c:
        for step, loss in ((1, 0.5), (2, 0.2), (3, 0.4)):
            c.save(state._replace(step=jnp.int32(step)), meta={}, metrics={"loss": loss})
        assert c.best_step() == 2
        assert c.all_steps() == [2, 3]


def test_config_mismatch_is_a_clear_error_and_nothing_is_overwritten(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={"hidden": 6, "lr": 0.1}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(4)), meta={})
    before = _digest(tmp_path)
    with pytest.raises(
        ConfigMismatchError, match=r"different configuration \(hidden: stored 6, now 8\)"
    ):
        Checkpointer(tmp_path, config={"hidden": 8, "lr": 0.1})
    assert _digest(tmp_path) == before


def test_checkpoint_written_under_another_config_is_refused(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={"hidden": 6}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={})
    # someone edits config.json by hand: the checkpoint's own copy still disagrees
    (tmp_path / "config.json").write_text(json.dumps({"hidden": 7}))
    with Checkpointer(tmp_path, config={"hidden": 7}) as ckpt:
        with pytest.raises(ConfigMismatchError, match="hidden: stored 6, now 7"):
            ckpt.restore(state)


@pytest.mark.parametrize("victim", ["state", "meta"])
def test_corrupted_checkpoint_is_a_clear_error_and_left_untouched(tmp_path, victim):
    state = _state()
    with Checkpointer(tmp_path, config={"a": 1}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(3)), meta={"epoch": 0})
    files = [p for p in (tmp_path / "checkpoints" / "3" / victim).rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(b"\x00garbage\xff" * 3)
    before = _digest(tmp_path)
    with Checkpointer(tmp_path, config={"a": 1}) as ckpt:
        with pytest.raises(
            CorruptCheckpointError,
            match=r"checkpoints/3 (cannot be read|is corrupted).*left untouched",
        ):
            ckpt.restore(state)
        with pytest.raises(CheckpointError, match="never overwritten"):
            ckpt.save(state._replace(step=jnp.int32(3)), meta={})
    assert _digest(tmp_path) == before


def test_corrupted_config_json_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="config.json cannot be read"):
        Checkpointer(tmp_path, config={})


def test_restore_into_a_model_of_another_shape_fails_clearly(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={})
        other = init_rnn(jax.random.key(0), 30, 7, 1, bidirectional=True, token_inputs=True)
        template = init_train_state(other, default_optimizer(1e-2), key=jax.random.key(0))
        with pytest.raises(
            TemplateMismatchError, match=r"params.layers\[0\]\[0\].W_a as float32\(6, 36\) where"
        ):
            ckpt.restore(template)


def test_an_interrupted_write_is_ignored(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={"position": 1})
    # what a process killed in the middle of writing step 2 leaves behind
    tmp = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-123"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "half").write_bytes(b"\x01\x02")
    with Checkpointer(tmp_path, config={}) as ckpt:
        assert ckpt.all_steps() == [1]
        restored, meta = ckpt.restore(state)
        assert int(restored.step) == 1 and meta["position"] == 1
        ckpt.save(state._replace(step=jnp.int32(2)), meta={"position": 2})
        assert ckpt.all_steps() == [1, 2]


def test_restore_without_checkpoint_and_bad_arguments(tmp_path):
    with Checkpointer(tmp_path, config={}) as ckpt:
        assert ckpt.latest_step() is None and ckpt.best_step() is None
        with pytest.raises(CheckpointError, match="no checkpoint in"):
            ckpt.restore(_state())
    with pytest.raises(ValueError, match="`max_to_keep` must be >= 1"):
        Checkpointer(tmp_path, config={}, max_to_keep=0)


def test_config_diff_lists_nested_differences():
    assert config_diff({"a": {"b": 1}}, {"a": {"b": 2}}) == ["a.b: stored 1, now 2"]
    assert config_diff({"t": (1, 2)}, {"t": [1, 2]}) == []


# ----------------------------------------------------------------------------- integrity
def _largest_array_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def test_silent_case_3_flipped_array_bytes_raise_corrupt_checkpoint_error(tmp_path):
    params = {"w": jnp.arange(4096, dtype=jnp.float32)}
    opt = optax.sgd(0.1)
    state = init_train_state(params, opt, key=jax.random.key(0))
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={})
    victim = _largest_array_file(tmp_path / "checkpoints" / "1")
    data = bytearray(victim.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 256] = bytes((b + 1) % 256 for b in data[mid : mid + 256])
    victim.write_bytes(bytes(data))
    named = rf"checkpoints/1 is corrupted: the file {victim} does not match the sha256"
    with Checkpointer(tmp_path, config={}) as ckpt:
        with pytest.raises(CorruptCheckpointError, match=named):
            ckpt.restore(state)
        with pytest.raises(CorruptCheckpointError, match=named):
            ckpt.restore_params(params)
    # without the file checksums (e.g. a crash right after the commit) the per-array sha256
    # still catches it
    (tmp_path / "checkpoints" / "1" / "files.sha256.json").unlink()
    with Checkpointer(tmp_path, config={}) as ckpt:
        with pytest.raises(
            CorruptCheckpointError,
            match=r"checkpoints/1 is corrupted: the array params\['w'\] read from",
        ):
            ckpt.restore(state)


def test_changed_values_are_named_by_their_sha256(tmp_path, monkeypatch):
    # the same check, independent of the file layout: the restored values differ
    state = _state()
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={})
        real = ckpt_mod._leaves_with_names

        def tampered(tree):
            out = real(tree)
            return [(n, x + 1 if n == "params.head.W_y" else x) for n, x in out]

        monkeypatch.setattr(ckpt_mod, "_leaves_with_names", tampered)
        with pytest.raises(
            CorruptCheckpointError, match=r"the array params.head.W_y read from .*sha256"
        ):
            ckpt.restore(state)


def test_restore_with_another_optimizer_says_so_and_restore_params_works(tmp_path):
    state = _state(step=2)
    other = init_train_state(_state().params, optax.sgd(0.1), key=jax.random.key(5))
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state, meta={})
        with pytest.raises(TemplateMismatchError, match="optimizer state of the template") as e:
            ckpt.restore(other)
        assert (
            "tree structure stored (EmptyState, (ScaleByAdamState, ScaleByScheduleState)), "
            "given (EmptyState, EmptyState)" in str(e.value)
        )
        assert "corrupt" not in str(e.value)
        params = ckpt.restore_params(other.params)
        assert type(params) is type(state.params)
        for a, b in zip(_leaves(params), _leaves(state.params), strict=True):
            assert a.tobytes() == b.tobytes()
        with pytest.raises(CheckpointError, match="no best checkpoint"):
            ckpt.restore_params(other.params, step="best")


def test_keep_best_protects_the_best_step_without_best_metric(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={}, max_to_keep=1) as ckpt:
        ckpt.keep_best("loss", "min")
        for step, loss in ((1, 0.5), (2, 0.1), (3, 0.4), (4, 0.3)):
            ckpt.save(state._replace(step=jnp.int32(step)), meta={}, metrics={"loss": loss})
        assert ckpt.all_steps() == [2, 4] and ckpt.best_step() == 2
        restored, _ = ckpt.restore(state, step="best")
        assert int(restored.step) == 2
    with Checkpointer(tmp_path, config={}, max_to_keep=1, best_metric="loss", best_mode="min") as c:
        assert c.best_step() == 2  # read back from the stored metrics


def test_a_non_finite_state_is_never_written(tmp_path):
    state = _state()
    bad = state._replace(
        step=jnp.int32(2), params=jax.tree_util.tree_map(lambda x: x * jnp.nan, state.params)
    )
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={})
        with pytest.raises(
            CheckpointError, match=r"refusing to save step 2: the array params.* NaN"
        ):
            ckpt.save(bad, meta={})
        assert ckpt.all_steps() == [1]


def test_disk_full_during_save_is_one_clear_error_and_keeps_the_previous(tmp_path, monkeypatch):
    state = _state()
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={"position": 1})

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))

        monkeypatch.setattr(ckpt._manager, "save", full)
        with pytest.raises(CheckpointError) as e:
            ckpt.save(state._replace(step=jnp.int32(2)), meta={})
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith("could not write checkpoint step 2 to ")
        assert "No space left on device" in msg and "previous checkpoint (step 1) is kept" in msg
        monkeypatch.undo()
        assert ckpt.all_steps() == [1]
        restored, meta = ckpt.restore(state)
        assert int(restored.step) == 1 and meta["position"] == 1


def test_unreadable_checkpoint_error_is_one_line(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={})
    for p in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
        if p.is_file() and "/d/" in str(p):
            p.write_bytes(p.read_bytes()[:5])  # truncated
    with Checkpointer(tmp_path, config={}) as ckpt:
        with pytest.raises(CorruptCheckpointError) as e:
            ckpt.restore(state)
    assert "\n" not in str(e.value) and "checkpoints/1" in str(e.value)


# ----------------------------------------------------------------------------- locking
_HOLD = """
import sys
from rnn_jax.checkpoint import Checkpointer, RunDirectoryInUseError
try:
    Checkpointer(sys.argv[1], config={})
except RunDirectoryInUseError as err:
    print(err)
    sys.exit(3)
print("acquired")
"""


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    def other_process():
        return subprocess.run(
            [sys.executable, "-c", _HOLD, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    ckpt = Checkpointer(tmp_path, config={})
    try:
        out = other_process()
        assert out.returncode == 3, out.stderr
        assert f"is in use by process {os.getpid()}" in out.stdout
        with pytest.raises(RunDirectoryInUseError, match="this process"):
            Checkpointer(tmp_path, config={})
    finally:
        ckpt.close()
    out = other_process()  # released on close
    assert out.returncode == 0 and "acquired" in out.stdout, out.stderr


def test_import_has_no_global_side_effects_and_messages_name_no_cli_flag():
    code = (
        "import logging; n = len(logging.getLogger('absl').filters); "
        "import rnn_jax.checkpoint; "
        "print(len(logging.getLogger('absl').filters) - n)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "0", out.stderr
    source = Path(ckpt_mod.__file__).read_text()
    assert "--workdir" not in source


def test_read_only_writes_nothing_takes_no_lock_and_refuses_to_save(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, config={"a": 1}) as writer:
        writer.save(state._replace(step=jnp.int32(2)), meta={"position": 2})
        before = _digest(tmp_path)
        with Checkpointer(tmp_path, config={"a": 1}, read_only=True) as reader:  # beside it
            restored, meta = reader.restore(state)
            assert int(restored.step) == 2 and meta["position"] == 2
            with pytest.raises(CheckpointError, match="read-only"):
                reader.save(state._replace(step=jnp.int32(3)), meta={})
        assert _digest(tmp_path) == before
    with pytest.raises(ConfigMismatchError):
        Checkpointer(tmp_path, config={"a": 2}, read_only=True)
    with pytest.raises(CheckpointError, match="there is no run directory"):
        Checkpointer(tmp_path / "missing", config={}, read_only=True)


def test_disk_full_inside_orbax_commit_cleans_up_and_keeps_the_previous(tmp_path, monkeypatch):
    state = _state()
    with Checkpointer(tmp_path, config={}) as ckpt:
        ckpt.save(state._replace(step=jnp.int32(1)), meta={})

        def full(src, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

        with monkeypatch.context() as m:
            m.setattr(os, "rename", full)
            m.setattr(os, "replace", full)
            with pytest.raises(CheckpointError, match=r"step 2 .*No space left on device") as e:
                ckpt.save(state._replace(step=jnp.int32(2)), meta={})
        assert "\n" not in str(e.value) and "previous checkpoint (step 1) is kept" in str(e.value)
        assert ckpt.all_steps() == [1]
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
