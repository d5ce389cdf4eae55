"""The worked example of harness/alignment.py: which logit row scores which token."""

import json
from pathlib import Path

import numpy as np
import pytest

from harness.alignment import completion_rows, pick, pick_prompt, prompt_rows
from harness.processing import log_softmax

GOLDEN = json.loads((Path(__file__).parent.parent / "golden" / "worked_example.json").read_text())


def test_rows_of_worked_example():
    assert completion_rows(len(GOLDEN["input_ids"]), len(GOLDEN["output_ids"])) == GOLDEN["picked_rows"]


def test_picks_logits_of_worked_example():
    rows = np.array(GOLDEN["logits_rows"]["rows"])
    assert pick(rows, GOLDEN["input_ids"], GOLDEN["output_ids"]) == GOLDEN["expected_picks"]


def test_greedy_output_is_argmax_of_picked_rows():
    rows = np.array(GOLDEN["logits_rows"]["rows"])
    assert [int(np.argmax(rows[r])) for r in GOLDEN["picked_rows"]] == GOLDEN["output_ids"]


def test_seed_value_is_the_shifted_pick():
    """The seed's 0.4 is the decode row's value of the *previous* output token: a one-position shift."""
    rows = np.array(GOLDEN["logits_rows"]["rows"])
    shifted = [float(rows[r, t]) for r, t in zip(GOLDEN["picked_rows"], [GOLDEN["output_ids"][0]] * 2)]
    assert shifted == GOLDEN["seed_expected_picks"]
    assert shifted != GOLDEN["expected_picks"]


def test_picks_in_log_softmax_form():
    rows = log_softmax(np.array(GOLDEN["logits_rows"]["rows"]))
    got = pick(rows, GOLDEN["input_ids"], GOLDEN["output_ids"])
    assert got == pytest.approx(GOLDEN["expected_logprobs"]["values"], abs=1e-12)


def test_prompt_rows_first_has_none():
    assert prompt_rows(3) == [None, 0, 1]
    rows = np.array(GOLDEN["logits_rows"]["rows"])
    assert pick_prompt(rows, GOLDEN["input_ids"]) == [None, 0.2, 0.3]


def test_too_few_rows_is_an_error():
    with pytest.raises(ValueError, match="cannot score"):
        pick(np.zeros((2, 5)), [0, 1, 2], [1, 4])
