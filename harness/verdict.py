"""A check's outcome: the unit of summary.json, junit.xml and the HTML report."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# measured: a check the run's tolerance profile shows without gating (harness/checks/profiles.py); never a pass
Outcome = Literal["pass", "fail", "error", "skipped", "measured"]
OUTCOMES = ("pass", "fail", "error", "skipped", "measured")


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    check: str
    backends: list[str]
    case: str
    metric: str
    value: float | None
    threshold: float | None
    verdict: Outcome
    detail: str = ""
    data: dict = {}

    @property
    def test_id(self) -> str:
        return f"{self.check}[{self.case}:{'-vs-'.join(self.backends)}]"
