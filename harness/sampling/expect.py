"""What the reference computes for the sampling checks (numpy only: runs in the reference's venv).

`score_extras` is called by the recorder's score phase (harness/recorder.py, run_score) for the
reference backend; it sets the typed extras of each ScoreRecord (harness/records.py):

For cases whose checks need `distribution` (sampling_distribution), on the record of sample 0 of every prompt (one per
prompt and source), the full first-step distribution over the vocabulary (`FirstStepDistribution`):

- `raw`, `temperature`, `processed`: log-probabilities in each logprob mode
  (harness.processing; processed = the canonical sampling distribution, vLLM's order).
- `processed_by_engine[<engine>]`: the same under the sampler semantics of each engine that declares its own
  order of the filters (`SamplingDialect.processed`, in the engine's backend module; sglang-jax 0.0.2: top_p
  measured on the full distribution before the top-k/min-p cut), to tell a convention difference from a
  sampler defect.
- `processed_without[<field>]`: the processed distribution with one set field of top_k, top_p,
  min_p, temperature at its neutral value (`WITHOUT`): the diagnosis names the field whose absence
  explains a failing engine's draws.
- `borderline`: token ids whose membership of the support flips when the top-p / min-p
  thresholds move by a relative 1e-3 or that tie the top-k boundary within 1e-4 (in either
  semantics): float32 engines may decide them either way.

For cases whose checks need `effects` (sampling_effects), on every record, per completion position i (teacher-forced on
that source's own tokens, so one early difference does not cascade; `GreedyEffects`):

- `argmax`: the reference's greedy token under the spec (penalties, logit_bias, min_tokens
  suppression of EOS/stop tokens), given the completion's first i tokens;
- `margin`: processed logit of that argmax minus that of the source's token (0 where equal;
  inf where the source's token is impossible, e.g. an EOS before min_tokens);
- `without[<field>]`: the argmax with that one effect field at its neutral value (the control:
  a field the case sets must change at least one of these somewhere, else the case does not
  exercise it);
- `eos`: the model's EOS ids (a constant list).

For cases whose checks need `sequence` (sampling_sequence), on every record, per completion position i (teacher-forced on
that source's own tokens): where the sampled token sits in the exact processed distribution given
the completion's first i tokens, the two numbers of its randomised probability integral transform
(harness.sampling.stats.pit_sequence_test; `SequencePIT`):

- `above`: the processed probability mass of the tokens ranked above the sampled one
  (descending processed probability, ties by token id: the order the engines' samplers sort in);
- `p`: the sampled token's processed probability (0 for a token outside the support).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.processing import apply_penalties, log_softmax, mode_logprobs, processed_logits
from harness.checks.catalog import DISTRIBUTION, EFFECTS, SEQUENCE, needs
from harness.records import FirstStepDistribution, GreedyEffects, SequencePIT
from harness.sampling.mapping import EFFECT_NEUTRAL, conventions
from harness.spec import SamplingSpec


NEUTRAL: dict[str, Any] = EFFECT_NEUTRAL
EFFECT_FIELDS = tuple(NEUTRAL)
#: the truncation fields and temperature, at the value that leaves them out (a field an engine may drop)
WITHOUT: dict[str, Any] = {"top_k": None, "top_p": 1.0, "min_p": 0.0, "temperature": 1.0}
BORDER_REL = 1e-3
BORDER_TIE = 1e-4


#: "processed" (canonical) and "processed:<engine>" for every engine that declares its own filter order
#: (SamplingDialect.processed, in the engine's backend module)
SEMANTICS = {"processed": processed_logits, **{f"processed:{e}": c.logits for e, c in conventions().items()}}


def _support(fn, x: np.ndarray, spec: SamplingSpec) -> set[int]:
    return set(np.flatnonzero(np.isfinite(fn(x, spec))).tolist())


def borderline_tokens(penalised: np.ndarray, spec: SamplingSpec) -> list[int]:
    """Tokens whose support membership is not robust to float32 (module docstring)."""
    if spec.greedy:
        return []
    out: set[int] = set()
    for fn in SEMANTICS.values():
        if spec.top_p >= 1.0 and spec.min_p <= 0.0:
            break  # off stays off: only a threshold that is set has a boundary
        top_p = (min(1.0, spec.top_p * (1 + BORDER_REL)), spec.top_p * (1 - BORDER_REL)) if spec.top_p < 1.0 \
            else (1.0, 1.0)
        loose = spec.model_copy(update={"top_p": top_p[0], "min_p": spec.min_p * (1 - BORDER_REL)})
        tight = spec.model_copy(update={"top_p": top_p[1], "min_p": min(0.999999, spec.min_p * (1 + BORDER_REL))})
        out |= _support(fn, penalised, loose) ^ _support(fn, penalised, tight)
    if spec.top_k is not None and spec.top_k < penalised.size:
        x = np.asarray(penalised, dtype=np.float64) / spec.temperature
        kth = np.sort(x)[-spec.top_k]
        near = np.flatnonzero(np.abs(x - kth) < BORDER_TIE)
        if near.size > 1:
            out |= set(near.tolist())
    return sorted(out)


def distribution_extras(runner: Any, prompt: list[int], spec: SamplingSpec) -> FirstStepDistribution:
    row = runner.logits(list(prompt))[-1]
    pen = apply_penalties(row, spec, list(prompt), [])
    modes = {m: d.tolist() for m, d in mode_logprobs(row, spec, pen).items()}
    by_engine = {engine: log_softmax(c.logits(pen, spec)).tolist() for engine, c in conventions().items()}
    # the diagnosis's alternatives (harness/checks/sampling.py): the distribution with one set field left out
    without = {f: log_softmax(processed_logits(pen, spec.model_copy(update={f: neutral}))).tolist()
               for f, neutral in WITHOUT.items() if not spec.greedy and getattr(spec, f) != neutral}
    return FirstStepDistribution(**modes, processed_by_engine=by_engine, processed_without=without,
                                 borderline=borderline_tokens(pen, spec))


def _greedy_row(row: np.ndarray, spec: SamplingSpec, prompt: list[int], prefix: list[int],
                eos: set[int]) -> np.ndarray:
    x = apply_penalties(row, spec, prompt, prefix)
    if len(prefix) < spec.min_tokens:
        stops = set(spec.stop_token_ids) | set(eos)
        x[sorted(stops)] = -np.inf
    return x


def effect_extras(runner: Any, prompt: list[int], completion: list[int], spec: SamplingSpec,
                  eos: set[int]) -> GreedyEffects:
    prompt, completion = list(prompt), list(completion)
    active = [f for f in EFFECT_FIELDS if getattr(spec, f) != NEUTRAL[f]]
    neutral = {f: spec.model_copy(update={f: NEUTRAL[f]}) for f in active}
    out = GreedyEffects(argmax=[], margin=[], without={f: [] for f in active}, eos=sorted(eos))
    if not completion:
        return out
    logits = runner.logits(prompt + completion)
    for i, tok in enumerate(completion):
        row = logits[len(prompt) + i - 1]
        x = _greedy_row(row, spec, prompt, completion[:i], eos)
        am = int(np.argmax(x))
        out.argmax.append(am)
        out.margin.append(float(x[am] - x[tok]) if np.isfinite(x[tok]) else float("inf"))
        for f, sp in neutral.items():
            out.without[f].append(int(np.argmax(_greedy_row(row, sp, prompt, completion[:i], eos))))
    return out


def sequence_extras(runner: Any, prompt: list[int], completion: list[int], spec: SamplingSpec) -> SequencePIT:
    prompt, completion = list(prompt), list(completion)
    out = SequencePIT(above=[], p=[])
    if not completion or spec.greedy:
        return out
    logits = runner.logits(prompt + completion)
    for i, tok in enumerate(completion):
        pen = apply_penalties(logits[len(prompt) + i - 1], spec, prompt, completion[:i])
        p = np.exp(log_softmax(processed_logits(pen, spec)))
        pt = float(p[tok])
        # mass strictly above tok in (descending p, ascending id) order
        above = float(p[p > pt].sum() + p[:tok][p[:tok] == pt].sum())
        out.above.append(above)
        out.p.append(pt)
    return out


def score_extras(runner: Any, case: Any, batch: list, scored: list) -> None:
    """Set the extras above on the reference's Scored results of one (case, source) batch, in place: those the
    case's checks declare they need (harness/checks/catalog.py: DISTRIBUTION, EFFECTS, SEQUENCE)."""
    need = needs(case.checks)
    if not need & {DISTRIBUTION, EFFECTS, SEQUENCE}:
        return
    spec: SamplingSpec = case.sampling
    eos = set(getattr(runner, "_eos", set()))
    dists: dict[tuple[int, ...], FirstStepDistribution] = {}
    for g, s in zip(batch, scored):
        if DISTRIBUTION in need and g.key.sample_index == 0:
            key = tuple(g.prompt_ids)
            if key not in dists:
                dists[key] = distribution_extras(runner, g.prompt_ids, spec)
            s.distribution = dists[key]
        if EFFECTS in need:
            s.effects = effect_extras(runner, g.prompt_ids, g.completion_ids, spec, eos)
        if SEQUENCE in need:
            s.sequence = sequence_extras(runner, g.prompt_ids, g.completion_ids, spec)
