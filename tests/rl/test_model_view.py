"""model() of a rollout given a rollout_actor (harness.backends.tunix_contract.model_view / update_view).

tunix's learners call `is_sharing_weights(actor, rollout.model())` (array identity, leaf by leaf) and skip
`sync_weights` when it is true: a rollout whose model() shares the actor's arrays never gets update_params,
and trains on stale weights. Runs in the RL venv (tunix, flax)."""

from __future__ import annotations

import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx", reason="tests/rl runs in the RL venv (nox -s rl_tests)")
rl_utils = pytest.importorskip("tunix.rl.utils", reason="tests/rl runs in the RL venv (nox -s rl_tests)")

import jax  # noqa: E402

from harness.backends.tunix_contract import model_view, update_view  # noqa: E402


def leaves(module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(nnx.state(module))]


def test_model_view_holds_its_own_arrays():
    actor = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    assert rl_utils.is_sharing_weights(actor, nnx.clone(actor))  # why a clone is not enough
    view = model_view(actor)
    assert not rl_utils.is_sharing_weights(actor, view)
    for a, v in zip(leaves(actor), leaves(view)):
        np.testing.assert_array_equal(a, v)


def test_a_sync_keeps_the_view_apart_and_in_step():
    actor = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    view = model_view(actor)
    update_view(view, nnx.state(actor))  # sync_weights hands over the trainer's own state
    assert not rl_utils.is_sharing_weights(actor, view)  # else the next sync would be skipped
    moved = jax.tree.map(lambda x: x + 1.0, nnx.state(actor))
    update_view(view, moved)
    for m, v in zip(jax.tree_util.tree_leaves(moved), leaves(view)):
        np.testing.assert_array_equal(np.asarray(m), v)
    update_view(view, "/a/weights/dir")  # a path: nothing to mirror, the view stays
    for m, v in zip(jax.tree_util.tree_leaves(moved), leaves(view)):
        np.testing.assert_array_equal(np.asarray(m), v)
