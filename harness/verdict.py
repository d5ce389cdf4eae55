"""A check's outcome: the unit of summary.json, junit.xml and the HTML report."""

from __future__ import annotations

import zlib
from pathlib import Path
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


class ChecksFile(BaseModel):
    """checks.json as written by harness.compare.write_checks."""

    schema_version: int
    verdicts: list[Verdict]


# checks.json files this process wrote, with the verdicts they hold: `parity run` compares and then reports
# in one process, and a large run's checks.json (tens of MB) need not be parsed and validated again.
_WRITTEN: dict[str, tuple[tuple, list[Verdict]]] = {}


def _signature(path: Path, data: bytes) -> tuple:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino, len(data), zlib.crc32(data)


def remember_checks(path: Path, data: bytes, verdicts: list[Verdict]) -> None:
    """Note that `path` now holds exactly `data`, written from `verdicts` (which must not change after)."""
    path = Path(path)
    key = str(path.resolve())
    _WRITTEN.pop(key, None)
    _WRITTEN[key] = (_signature(path, data), list(verdicts))
    while len(_WRITTEN) > 4:
        _WRITTEN.pop(next(iter(_WRITTEN)))


def recall_checks(path: Path, data: bytes) -> list[Verdict] | None:
    """The verdicts `data` was written from, if this process wrote `path` with exactly `data` (same size,
    mtime, inode and CRC-32 as then); None otherwise (then parse it)."""
    path = Path(path)
    hit = _WRITTEN.get(str(path.resolve()))
    if hit is None or hit[0] != _signature(path, data):
        return None
    return list(hit[1])


def forget_checks(path: Path) -> None:
    _WRITTEN.pop(str(Path(path).resolve()), None)
