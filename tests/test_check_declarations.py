"""A check is declared once (harness/checks/base.py: @check): the catalog, the registry, the suite's prerequisites
and tolerances, the recorder's needs and docs/check-reference.md all come from the declarations."""

from __future__ import annotations

import pkgutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness.checks as checks_pkg
from harness.checks import catalog
from harness.checks.base import EACH_BACKEND, ENGINE_VS_REFERENCE, Check, NotApplicable
from harness.checks.catalog import CATALOG
from harness.checks.data import Unavailable
from harness.suite import SuiteError, load_suite


def test_docs_check_reference_md_is_current():
    doc = Path(__file__).parent.parent / "docs" / "check-reference.md"
    assert doc.read_text() == catalog.reference_markdown() + "\n", \
        "regenerate: python -m harness schema --checks > docs/check-reference.md"


def test_every_declaration_is_complete_and_the_registry_is_the_catalog():
    from harness.checks.registry import CHECKS

    assert list(CHECKS) == list(CATALOG)
    for name, c in CATALOG.items():
        assert c.name == name and c.summary and c.measures and c.fails, name
        assert c.unit_doc or (c.units is not None and c.units.doc), name
        assert c.needs <= catalog.NEEDS, name
        assert c.section in catalog.SECTIONS, name  # its place in the reference table and the self-test matrix
        assert CHECKS[name] is c


def test_the_catalog_order_is_the_sections_then_the_modules_declarations():
    sections = [catalog.SECTIONS.index(c.section) for c in CATALOG.values()]
    assert sections == sorted(sections)
    with pytest.raises(ValueError, match="unknown section 'nowhere'"):
        from harness.checks.base import check

        check("x", section="nowhere", summary="s", units=EACH_BACKEND)


def test_every_module_of_the_package_is_framework_or_declares_a_check():
    modules = {m.name for m in pkgutil.iter_modules(checks_pkg.__path__) if not m.ispkg}
    declaring = {c.module.rsplit(".", 1)[1] for c in CATALOG.values()}
    assert modules - catalog.FRAMEWORK == declaring
    assert catalog.FRAMEWORK <= modules | {"catalog"}


def test_recorder_needs_come_from_the_declarations():
    assert catalog.needs(["weight_update", "replay"]) == {catalog.OTHER_WEIGHTS}
    assert catalog.needs(["seed_rule"]) == {catalog.SEED_RULE_VARIANTS}
    assert catalog.needs(["sampling_distribution", "sampling_effects"]) == {catalog.DISTRIBUTION, catalog.EFFECTS}
    assert not catalog.scored_by_engines(["sampling_distribution", "sampling_effects"])
    assert catalog.scored_by_engines(["sampling_effects", "eos_policy"])
    assert catalog.scored_by_engines([])


def test_a_tolerance_for_one_check_must_be_one_it_declares(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("suite: s\ncases:\n  - id: a\n    prompts: [x]\n    tolerances: {replay: {alpha: 0.1}}\n")
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    assert "replay.alpha" in str(e.value) and "case 'a'" in str(e.value)
    path.write_text("suite: s\ncases:\n  - id: a\n    prompts: [x]\n    tolerances: {n_samples: {alpha: 0.1}, alpha: 0.2}\n")
    case = load_suite(path).cases[0]
    assert case.tolerance("alpha", "n_samples") == 0.1 and case.tolerance("alpha", "sampling_distribution") == 0.2


def _ctx(backends):
    engines = [b for b in backends if b != "reference"]
    return SimpleNamespace(backends=backends, engines=engines, has_reference="reference" in backends)


def _case(**kw):
    return SimpleNamespace(id="c", **kw)


def test_the_framework_guards_every_unit():
    """One unit's missing data, one unit's bug: each its own verdict, the other units judged."""

    def fn(ctx, case, x):
        if x == "a":
            raise Unavailable("skipped", "a skipped this case")
        if x == "b":
            raise ZeroDivisionError("bug")
        from harness.checks.base import verdict

        return verdict("fake", case.id, [x], metric="m", value=0, threshold=0, passed=True, detail="ok")

    fake = Check(name="fake", summary="s", fn=fn, units=EACH_BACKEND, metric="m")
    got = fake(_ctx(["a", "b", "c"]), _case())
    assert [(v.backends, v.verdict) for v in got] == [(["a"], "skipped"), (["b"], "error"), (["c"], "pass")]
    assert "internal error in check fake: ZeroDivisionError" in got[1].detail and got[1].metric == "m"


def test_a_run_without_units_or_a_case_without_the_precondition_gets_one_verdict():
    def never(*a):
        raise AssertionError("no unit runs")

    pair = Check(name="fake", summary="s", fn=never, units=ENGINE_VS_REFERENCE, metric="k3")
    [v] = pair(_ctx(["vllm"]), _case())
    assert v.verdict == "skipped" and v.backends == [] and "fake needs an engine and the reference" in v.detail
    gated = Check(name="fake", summary="s", fn=never, units=EACH_BACKEND, metric="m",
                  precondition=lambda case: NotApplicable("not for this case", "error"))
    [v] = gated(_ctx(["reference", "vllm"]), _case())
    assert (v.verdict, v.detail, v.backends) == ("error", "not for this case", [])
    assert Check(name="fake", summary="s", fn=never, units=EACH_BACKEND, metric="m")(_ctx([]), _case()) == []
