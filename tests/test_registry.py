"""The backend registry (harness.backends.registry): the one table every other module reads."""

from __future__ import annotations

import pytest

from harness.backends import base, registry
from harness.backends.http import external


def test_roles_are_unique_and_defaults_start_with_the_reference():
    assert registry.reference() in registry.BACKENDS
    assert registry.BACKENDS[registry.reference()].role == "reference"
    assert registry.BACKENDS[registry.unit_under_test()].role == "unit"
    defaults = registry.default_backends()
    assert defaults[0] == registry.reference()
    assert registry.unit_under_test() in defaults and registry.baseline_engine() in defaults
    assert not any(registry.BACKENDS[b].serves for b in defaults)  # served variants are opt-in


def test_every_backend_names_a_known_venv_and_a_module_class_runner():
    for name, b in registry.BACKENDS.items():
        assert b.venv in registry.VENVS, name
        module, _, cls = b.runner.partition(":")
        assert module.startswith("harness.backends.") and cls, name
        if b.serves:
            assert b.serves in registry.BACKENDS and b.venv == registry.BACKENDS[b.serves].venv, name
    for v in registry.VENVS.values():
        for req in v.requirements.values():
            assert (registry.ROOT / "requirements" / req).is_file(), (v.name, req)


def test_served_variants_and_external_servers_run_in_their_engines_venv(monkeypatch):
    for name, b in registry.served().items():
        assert base.venv_of(name) == registry.venv_name(b.serves)
        assert registry.served_of(b.serves) == name
        assert external.ENGINES[b.serves] == name
    engine = next(iter(external.ENGINES))
    monkeypatch.setenv(external.engine_env("mine"), engine)
    assert base.is_backend("mine") and base.venv_of("mine") == registry.venv_name(engine)
    assert not base.is_backend("nobody")


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(KeyError, match="known:"):
        registry.get("nobody")
    with pytest.raises(KeyError, match="unknown backend"):
        base.runner_class("nobody")


def test_a_registered_backend_is_seen_by_every_reader(monkeypatch):
    """What a plugin does: one entry, and the run defaults, colours, venv lookup and RL engines follow."""
    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))
    monkeypatch.setattr(base, "BACKENDS", registry.BACKENDS)
    registry.register(registry.Backend("mine", "harness.backends.reference:ReferenceRunner", "reference",
                                       colour="#000001", rollout="x.y:Z", rl_venv="rl_sglang", default=False))
    assert base.is_backend("mine") and base.venv_of("mine") == "reference"
    assert "mine" not in registry.default_backends()
    assert registry.colours()["mine"] == "#000001"
    assert registry.rl_engines()["mine"].rollout == "x.y:Z" and "mine" not in registry.rl_engines(defaults_only=True)
    assert base.runner_class("mine").__name__ == "ReferenceRunner"
    with pytest.raises(ValueError, match="role"):
        registry.register(registry.Backend("bad", "a:B", "reference", role="judge"))  # type: ignore[arg-type]


def test_exactly_one_reference_and_one_unit_under_test(monkeypatch):
    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))
    registry.register(registry.Backend("second", "a:B", "reference", role="unit"))
    with pytest.raises(RuntimeError, match="exactly one"):
        registry.unit_under_test()


def test_vllm_flavour_comes_from_its_environment_variable(monkeypatch):
    flavoured = next(v for v in registry.VENVS.values() if v.flavour_env)
    monkeypatch.delenv(flavoured.flavour_env, raising=False)
    assert flavoured.requirement_file() == flavoured.requirements[flavoured.default_flavour]
    other = next(f for f in flavoured.requirements if f != flavoured.default_flavour)
    monkeypatch.setenv(flavoured.flavour_env, other)
    assert flavoured.requirement_file() == flavoured.requirements[other]
    assert flavoured.post_install() == flavoured.after.get(other, ())
    monkeypatch.setenv(flavoured.flavour_env, "abacus")
    with pytest.raises(ValueError, match=flavoured.flavour_env):
        flavoured.requirement_file()


def test_venv_python_follows_parity_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("PARITY_NOX_ENVDIR", raising=False)
    monkeypatch.setenv("PARITY_CACHE", str(tmp_path))
    ref = registry.reference()
    assert registry.venv_python(ref) == tmp_path / "nox" / registry.venv_name(ref) / "bin" / "python"
    monkeypatch.setenv("PARITY_NOX_ENVDIR", str(tmp_path / "e"))
    assert registry.venv_python(ref) == tmp_path / "e" / registry.venv_name(ref) / "bin" / "python"
