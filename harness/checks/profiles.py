"""Tolerance profiles per dtype: which thresholds a run's verdicts use, chosen from the dtype its
engines really ran in (their session records), below any suite or case override.

    harness/checks/profiles/<dtype>.yaml
      dtype: bfloat16
      calibrated: true                       # false: no study backs it; the run says so (an error verdict)
      study: calibration/bfloat16.json       # the measured data the thresholds came from
      rule: "..."                            # how the data became thresholds
      tolerances: {k3_max: ..., replay: {logprob_atol: ...}}   # as a suite's `tolerances:`
      measured_only: {batch_invariance: [sglang_jax]}          # check -> engines ("*": all): shown, not gated

float32 has no file: its profile is the catalog's defaults (harness/checks/catalog.py), unchanged.
A dtype with neither a file nor float32's exactness (float16 here) gets the float32 thresholds and
a `tolerance_profile` error verdict saying that no calibrated profile exists for it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
EXACT = "float32"  # the catalog's defaults are this dtype's profile
PRECISION = {"float64": 0, "float32": 1, "bfloat16": 3, "float16": 2}  # worse precision: larger


@dataclass(frozen=True)
class Profile:
    dtype: str
    calibrated: bool
    tolerances: dict[str, float] = field(default_factory=dict)
    measured_only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    study: str | None = None
    rule: str = ""
    path: str | None = None

    def gated(self, check: str, backends: list[str]) -> bool:
        """False when `check` is measured, not gated, for any engine among `backends` at this dtype."""
        who = self.measured_only.get(check)
        return not who or ("*" not in who and not set(who) & set(backends))


def _parse(path: Path) -> Profile:
    from harness.suite import check_tolerance_keys, flatten_tolerances

    raw = yaml.safe_load(path.read_text()) or {}
    tol = {k: (math.inf if v in ("inf", ".inf") else float(v)) for k, v in
           flatten_tolerances(raw.get("tolerances") or {}).items()}
    try:
        check_tolerance_keys(tol)
    except ValueError as e:
        raise ValueError(f"{path}: tolerances: {e}") from None
    return Profile(dtype=raw.get("dtype", path.stem), calibrated=bool(raw.get("calibrated", False)), tolerances=tol,
                   measured_only={c: tuple(v) for c, v in (raw.get("measured_only") or {}).items()},
                   study=raw.get("study"), rule=raw.get("rule", ""), path=str(path))


@functools.lru_cache(maxsize=None)
def profile(dtype: str) -> Profile:
    path = PROFILE_DIR / f"{dtype}.yaml"
    if path.is_file():
        return _parse(path)
    return Profile(dtype=dtype, calibrated=dtype in (EXACT, "float64"))


def profile_tolerance(dtype: str, name: str, check: str | None) -> float | None:
    if dtype == EXACT:
        return None
    tol = profile(dtype).tolerances
    if check and f"{check}.{name}" in tol:
        return tol[f"{check}.{name}"]
    return tol.get(name)


def run_dtype(ctx) -> tuple[str, dict[str, str]]:
    """(the dtype whose profile applies, {engine: dtype}) from the engines' generate session records
    (the dtype each reported, else its config or device string, as harness.golden reads them); with
    none, run.json's `dtype` (RunData.dtype); with neither (a reference-only run), float32. Engines in
    several dtypes: the least precise one applies."""
    from harness.golden import _dtype

    per = {}
    for e in ctx.engines:
        s = ctx.session(e, "generate")
        if s is not None:
            per[e] = _dtype(s.device or "", s.config or {}, getattr(s, "dtype", None))
    known = [d for d in per.values() if d in PRECISION]
    if not known:
        return (ctx.dtype if ctx.dtype in PRECISION else EXACT), per
    return max(known, key=PRECISION.__getitem__), per
