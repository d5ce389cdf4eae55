"""junit.xml: one <testcase> per verdict, for CI test-report parsers (GitHub, GitLab, Jenkins).

    <testsuites name="rollout-parity" tests= failures= errors= skipped=>
      <testsuite name="parity.<run_id>" ...>         one testcase per verdict, in checks.json order
        <testcase classname="<check>" name="<case>[<a>-vs-<b>]">
          <properties><property name="metric" value=.../> value, threshold, backends</properties>
          <failure|error|skipped message="..."/>   (nothing for a pass)
      <testsuite name="parity.<run_id>.harness">     backends that did not run, harness problems
        <testcase classname="backend" name="<backend>"> ... <error/> when it failed

The second suite keeps a crashed backend or a missing checks.json visible in CI
even when it produced no verdict at all; the first one's counts are exactly
the verdict counts of summary.json.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from harness.verdict import Verdict

# characters XML 1.0 forbids (ANSI escapes in engine logs, NULs): a parser rejects the whole file for one
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(tree: ET.Element) -> None:
    for el in tree.iter():
        if el.text:
            el.text = _XML_BAD.sub("\ufffd", el.text)
        for k, v in el.attrib.items():
            el.attrib[k] = _XML_BAD.sub("\ufffd", v)


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _message(v: Verdict) -> str:
    msg = f"{v.metric}={_fmt(v.value)}"
    if v.threshold is not None:
        msg += f" (threshold {_fmt(v.threshold)})"
    if v.detail:
        msg += f": {v.detail.splitlines()[0][:300]}"
    return msg


def _names(verdicts: list[Verdict]) -> list[str]:
    """`case[a-vs-b]`, with the metric appended where one check reports several metrics for the same case
    and backends (so that no two testcases share classname and name)."""
    base = [f"{v.case}[{'-vs-'.join(v.backends)}]" for v in verdicts]
    dup = Counter((v.check, b) for v, b in zip(verdicts, base))
    names = [f"{b} {v.metric}" if dup[(v.check, b)] > 1 else b for v, b in zip(verdicts, base)]
    seen: Counter = Counter()
    out = []
    for v, n in zip(verdicts, names):
        seen[(v.check, n)] += 1
        out.append(n if seen[(v.check, n)] == 1 else f"{n} #{seen[(v.check, n)]}")
    return out


def _suite(parent: ET.Element, name: str, cases: list[ET.Element], timestamp: str) -> None:
    c = Counter()
    for tc in cases:
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                c[child.tag] += 1
    s = ET.SubElement(parent, "testsuite", name=name, tests=str(len(cases)), failures=str(c["failure"]),
                      errors=str(c["error"]), skipped=str(c["skipped"]), time="0", timestamp=timestamp)
    s.extend(cases)


def build_junit(verdicts: list[Verdict], summary: dict) -> ET.Element:
    ts = summary.get("generated_at", "")[:19]
    cases = []
    for v, name in zip(verdicts, _names(verdicts)):
        tc = ET.Element("testcase", classname=v.check, name=name, time="0")
        props = ET.SubElement(tc, "properties")
        for k, val in (("metric", v.metric), ("value", _fmt(v.value)), ("threshold", _fmt(v.threshold)),
                       ("backends", ",".join(v.backends)), ("case", v.case)):
            ET.SubElement(props, "property", name=k, value=val)
        if v.verdict == "fail":
            ET.SubElement(tc, "failure", message=_message(v), type="ParityFailure").text = v.detail or None
        elif v.verdict == "error":
            ET.SubElement(tc, "error", message=_message(v), type="CheckError").text = v.detail or None
        elif v.verdict in ("skipped", "measured"):  # measured, not gated: JUnit has no such state, and it is no pass
            ET.SubElement(tc, "skipped", message=v.detail or v.verdict)
        if v.detail:
            ET.SubElement(tc, "system-out").text = v.detail
        cases.append(tc)

    harness_cases = []
    for b, st in summary["backends"].items():
        tc = ET.Element("testcase", classname="backend", name=b, time=str(st["wall_s"] or 0))
        if st["status"] != "ok":
            text = "\n".join(f"{e['phase']} {e['case'] or ''}: {e['error_type']}: {e['reason']}" for e in st["errors"])
            ET.SubElement(tc, "error", message=f"{b} {st['status']}: {st['reason']}"[:500],
                          type="BackendFailed").text = text or None
        harness_cases.append(tc)
    for i, p in enumerate(summary["problems"]):
        tc = ET.Element("testcase", classname="harness", name=f"problem-{i + 1}", time="0")
        ET.SubElement(tc, "error", message=p[:500], type="HarnessError").text = p
        harness_cases.append(tc)

    root = ET.Element("testsuites", name="rollout-parity")
    _suite(root, f"parity.{summary['run_id']}", cases, ts)
    _suite(root, f"parity.{summary['run_id']}.harness", harness_cases, ts)
    total = Counter()
    for s in root:
        for k in ("tests", "failures", "errors", "skipped"):
            total[k] += int(s.get(k))
    for k in ("tests", "failures", "errors", "skipped"):
        root.set(k, str(total[k]))
    root.set("time", "0")
    _clean(root)
    return root


def _cdata(text: str) -> str:
    """ElementTree's escaping of text."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


_ATTR_SPECIAL = re.compile('[&<>"\r\n\t]')


def _attr(text: str) -> str:
    """ElementTree's escaping of an attribute value."""
    if not _ATTR_SPECIAL.search(text):
        return text
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("\r", "&#13;"), ("\n", "&#10;"),
                 ("\t", "&#09;")):
        text = text.replace(a, b)
    return text


def _el(tag: str, attrs: list[tuple[str, str]], text: str | None = None) -> str:
    """A childless element as ElementTree writes it: `<tag a="v" />`, or with its text."""
    head = "<" + tag + "".join(f' {k}="{_attr(v)}"' for k, v in attrs)
    return f"{head}>{_cdata(text)}</{tag}>" if text else head + " />"


def junit_text(verdicts: list[Verdict], summary: dict) -> str:
    """junit.xml's text: exactly what ET.indent(build_junit(...)) and ElementTree.write(encoding="utf-8",
    xml_declaration=True) make (tests/test_report.py compares them), written out directly: building and
    serialising an ElementTree of 100k verdicts takes seconds, this a fraction of it."""
    ts = summary.get("generated_at", "")[:19]
    i3, i2, i1 = "\n      ", "\n    ", "\n  "
    i4 = i3 + "  "
    cases, tally = [], Counter()
    for v, name in zip(verdicts, _names(verdicts)):
        parts = ["<testcase" + f' classname="{_attr(v.check)}" name="{_attr(name)}" time="0">' + i3 + "<properties>"]
        for k, val in (("metric", v.metric), ("value", _fmt(v.value)), ("threshold", _fmt(v.threshold)),
                       ("backends", ",".join(v.backends)), ("case", v.case)):
            parts.append(i4 + f'<property name="{k}" value="{_attr(val)}" />')
        parts.append(i3 + "</properties>")
        if v.verdict == "fail":
            parts.append(i3 + _el("failure", [("message", _message(v)), ("type", "ParityFailure")], v.detail or None))
            tally["failure"] += 1
        elif v.verdict == "error":
            parts.append(i3 + _el("error", [("message", _message(v)), ("type", "CheckError")], v.detail or None))
            tally["error"] += 1
        elif v.verdict in ("skipped", "measured"):
            parts.append(i3 + _el("skipped", [("message", v.detail or v.verdict)]))
            tally["skipped"] += 1
        if v.detail:
            parts.append(i3 + _el("system-out", [], v.detail))
        cases.append("".join(parts) + i2 + "</testcase>")

    harness_cases, htally = [], Counter()
    for b, st in summary["backends"].items():
        head = f'<testcase classname="backend" name="{_attr(b)}" time="{_attr(str(st["wall_s"] or 0))}"'
        if st["status"] != "ok":
            text = "\n".join(f"{e['phase']} {e['case'] or ''}: {e['error_type']}: {e['reason']}" for e in st["errors"])
            err = _el("error", [("message", f"{b} {st['status']}: {st['reason']}"[:500]), ("type", "BackendFailed")],
                      text or None)
            harness_cases.append(head + ">" + i3 + err + i2 + "</testcase>")
            htally["error"] += 1
        else:
            harness_cases.append(head + " />")
    for i, p in enumerate(summary["problems"]):
        err = _el("error", [("message", p[:500]), ("type", "HarnessError")], p)
        harness_cases.append(f'<testcase classname="harness" name="problem-{i + 1}" time="0">' + i3 + err + i2
                             + "</testcase>")
        htally["error"] += 1

    def suite(name: str, tcs: list[str], c: Counter) -> str:
        head = (f'<testsuite name="{_attr(name)}" tests="{len(tcs)}" failures="{c["failure"]}" errors="{c["error"]}" '
                f'skipped="{c["skipped"]}" time="0" timestamp="{_attr(ts)}"')
        if not tcs:
            return head + " />"
        return head + ">" + i2 + i2.join(tcs) + i1 + "</testsuite>"

    total = {k: tally[k] + htally[k] for k in ("failure", "error", "skipped")}
    doc = ("<?xml version='1.0' encoding='utf-8'?>\n"
           f'<testsuites name="rollout-parity" tests="{len(cases) + len(harness_cases)}" failures="{total["failure"]}" '
           f'errors="{total["error"]}" skipped="{total["skipped"]}" time="0">'
           + i1 + suite(f"parity.{summary['run_id']}", cases, tally)
           + i1 + suite(f"parity.{summary['run_id']}.harness", harness_cases, htally) + "\n</testsuites>")
    return _XML_BAD.sub("\ufffd", doc)  # (what _clean does per text and attribute: escaping leaves them as they are)


def write_junit(path: Path, verdicts: list[Verdict], summary: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(junit_text(verdicts, summary).encode("utf-8", "xmlcharrefreplace"))
    tmp.replace(path)


def write_junit_etree(path: Path, verdicts: list[Verdict], summary: dict) -> None:
    """The reference implementation of write_junit (what junit_text must equal), for the tests."""
    root = build_junit(verdicts, summary)
    ET.indent(root)
    tmp = Path(str(path) + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
