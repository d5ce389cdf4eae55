"""What every backend runner offers the recorder: engines as context managers, one output type.

A runner wraps one engine (or the exact reference) for the harness. Engine
runners own a rollout object implementing tunix's `BaseRollout`
(`SglangJaxRollout`, `VllmRollout`), and translate between the canonical
`SamplingSpec` and the engine's native parameters. All token ids cross this
boundary as plain lists; positions follow the worked example in golden/worked_example.json:
completion logprob i is log p(completion[i] | prompt + completion[:i]).
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.backends import registry
from harness.model import ModelRef
from harness.spec import LogprobMode, SamplingSpec

if TYPE_CHECKING:
    from harness.records import FirstStepDistribution, GreedyEffects, SequencePIT


@dataclass
class Sample:
    """One completion as a backend returned it (unpadded)."""

    completion_ids: list[int]
    completion_logprobs: list[float] | None
    finish_reason: str | None
    prompt_logprobs: list[float | None] | None = None
    completion_top: list[dict[str, float]] | None = None
    stop_reason: int | str | None = None
    text: str = ""
    #: the engine's sampling parameters for this sample exactly as the rollout passed them to the engine
    #: (captured at the engine call, not recomputed): None where the runner cannot capture them
    sent: dict | None = None


@dataclass
class Scored:
    """Teacher-forced logprobs of a given completion (get_per_token_logps)."""

    logprobs: list[float]
    by_mode: dict[str, list[float]] = field(default_factory=dict)
    top: list[dict[str, float]] | None = None
    #: the reference's extras for the checks that need them (harness.records.ScoreRecord's fields of the same
    #: names): set by the recorder (other_weights) and harness/sampling/expect.py (the others)
    other_weights: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    distribution: FirstStepDistribution | None = None
    effects: GreedyEffects | None = None
    sequence: SequencePIT | None = None


class Runner(abc.ABC):
    """A backend as the recorder sees it. Use as a context manager: the engine lives inside."""

    name: str = ""
    #: what the completion logprobs returned by `generate` mean (see harness.spec)
    logprob_mode: LogprobMode = "raw"
    #: the resolved typed options it was built with (harness.backends.options), recorded in its session record
    backend_options: dict[str, Any] = {}
    #: the tunix `BaseRollout` this runner drives (engine runners), else None. The recorder also calls its
    #: tunix surface (generate(prompts, RolloutConfig), get_per_token_logps, pad_id, eos_id) the way tunix's
    #: RLCluster does (harness/recorder.py: tunix variant)
    rollout: Any = None
    #: the engine whose documented seed rule (harness/backends/seeds.py) this runner's draws follow; None: no rule
    #: (the reference draws with its own generator)
    seed_engine: str | None = None
    #: whether the recorder probes the rollout's update_params with each form tunix passes weights in
    #: (harness/backends/update_forms.py): the in-process engine rollouts, whose weights the harness can swap back
    update_forms_probe: bool = False
    #: "module:Class" of the engine-native paths `parity bench` measures beside the generic calls (a
    #: harness.bench_worker.NativeBench: generate with logprobs off, recompile counts, per-layer attribution);
    #: None: the generic calls only
    bench: str | None = None

    def __init__(self, model: ModelRef, **options: Any):
        """`options["dtype"]`: the dtype the engine must compute in (harness.dtypes.ENGINE_DTYPES)."""
        self.model = model
        self.options = options

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the engine."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Package versions that decide this backend's numbers."""

    @abc.abstractmethod
    def device(self) -> str:
        """Where it runs, in words (e.g. 'cpu', 'cuda:NVIDIA H100')."""

    def config(self) -> dict:
        """Engine construction options worth recording."""
        return {}

    @abc.abstractmethod
    def dtype(self) -> str:
        """The dtype the engine really computes in, as the engine itself reports it after loading
        (not the one requested): what the records' tolerances are judged for."""

    @abc.abstractmethod
    def native_params(self, spec: SamplingSpec) -> dict:
        """The engine's own sampling parameters for `spec`, exactly as sent."""

    @abc.abstractmethod
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        """One batch: for each prompt, `spec.n` samples in order, with prompt logprobs."""

    @abc.abstractmethod
    def score(self, prompts: list[list[int]], completions: list[list[int]], spec: SamplingSpec) -> list[Scored]:
        """Teacher-forced logprobs of each completion given its prompt (one batch)."""

    def tunix_config(self, spec: SamplingSpec) -> Any:
        """The tunix RolloutConfig a trainer would give for `spec` (tunix's when importable, else the stand-in
        with the same fields: harness/backends/tunix_contract.py). Only what RolloutConfig has."""
        from harness.backends.tunix_contract import RolloutConfig

        return RolloutConfig(max_tokens_to_generate=spec.max_tokens, temperature=spec.temperature,
                   top_p=None if spec.greedy else spec.top_p, top_k=spec.top_k, seed=spec.seed,
                   eos_tokens=list(spec.stop_token_ids) or None, return_logprobs=True)

    def last_sent(self) -> list[dict] | None:
        """Per prompt of the rollout's last generate call, the sampling parameters its (first) sample was sent
        to the engine with, as captured at the engine call; None where the rollout does not keep them."""
        return None

    @abc.abstractmethod
    def set_weights(self, model: ModelRef) -> None:
        """Swap the live weights in memory (update_params); the next call must reflect them."""


# The backends themselves are listed once, in harness.backends.registry; these helpers read it.
BACKENDS = registry.BACKENDS


def _external(name: str) -> str | None:
    """The served backend recording NAME against an external server (`parity run --backends NAME=URL`)."""
    from harness.backends.http.external import ENGINES, engine_of

    kind = engine_of(name) if name not in registry.BACKENDS else None
    return ENGINES[kind] if kind else None


def _rollout(name: str) -> str | None:
    """The factory of a rollout backend (any tunix BaseRollout driven by harness/backends/rollout_runner.py:
    `--backends NAME=module:Class`, a registered one such as tunix's shipped rollouts, an installed plugin),
    or None."""
    from harness.backends import rollout_runner

    return rollout_runner.rollout_spec(name)


def is_backend(name: str) -> bool:
    return name in registry.BACKENDS or _external(name) is not None or _rollout(name) is not None


def venv_of(name: str) -> str:
    """The venv (nox session) that runs `name`: a served engine runs in its engine's; a rollout backend in the
    one --backend-python names, else its registered venv, else the reference's (may be a path)."""
    if _rollout(name) is not None:
        from harness.backends import rollout_runner

        return rollout_runner.venv_of(name)
    return registry.venv_name(_external(name) or name)


class Unsupported(RuntimeError):
    """The backend cannot do what a case needs (e.g. a server with no weight-update endpoint): the recorder
    records the case as skipped with this reason, never runs it another way."""


class BackendUnavailable(RuntimeError):
    """The backend's packages are not importable in this interpreter."""


def runner_class(name: str) -> type[Runner]:
    if _rollout(name) is not None:
        from harness.backends.rollout_runner import runner_for

        return runner_for(name)
    served = _external(name)
    if name not in registry.BACKENDS and served is None:
        raise KeyError(f"unknown backend {name!r}; known: {sorted(registry.BACKENDS)}")
    module, cls = registry.BACKENDS[served or name].runner.split(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise BackendUnavailable(
            f"backend {name!r} cannot be imported here ({e}); run it in its own venv: "
            f"`nox -s {venv_of(name)} -- record --backend {name} ...`"
        ) from e
    return type(found.__name__, (found,), {"name": name}) if served else found
