#!/usr/bin/env python3
"""Summarize an Autobahn (kosoku) report directory in one line, and judge it.

    summarize.py ROLE REPORT_DIR [--min-cases N] [--allow-unimplemented]

Prints `autobahn ROLE: OK=N NON-STRICT=N INFORMATIONAL=N UNIMPLEMENTED=N FAILED=N`,
then one line per case that is not OK (with the reason from its report). Exits 1 when
any case FAILED or is NON-STRICT, when fewer than N cases ran, or (unless allowed) when
any is UNIMPLEMENTED.

A case is classified as the original Autobahn does: its `behavior` decides
(OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, anything else FAILED), except that an
OK behavior with a closing behavior other than OK or INFORMATIONAL is FAILED.
"""

import json
import sys
from pathlib import Path


def classify(entry):
    behavior = entry.get("behavior", "FAILED")
    close = entry.get("behaviorClose", "FAILED")
    if behavior == "OK":
        return "OK" if close in ("OK", "INFORMATIONAL") else "FAILED"
    if behavior in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
        return behavior
    return "FAILED"


def case_key(case_id):
    return tuple(int(part) if part.isdigit() else part for part in case_id.split("."))


def reason(report_dir, entry):
    try:
        report = json.loads((report_dir / entry["reportfile"]).read_text())
    except (OSError, KeyError, ValueError):
        return "no detail report"
    parts = [f"behavior={report.get('behavior')}", f"close={report.get('behaviorClose')}"]
    for key in ("result", "resultClose"):
        if report.get(key):
            parts.append(str(report[key]))
    return "; ".join(parts)[:300]


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    role, report_dir = args[0], Path(args[1])
    min_cases = 0
    if "--min-cases" in argv:
        min_cases = int(argv[argv.index("--min-cases") + 1])
    allow_unimplemented = "--allow-unimplemented" in argv

    index_file = report_dir / "index.json"
    if not index_file.exists():
        print(f"autobahn {role}: no report at {index_file}")
        return 1
    index = json.loads(index_file.read_text())
    counts = dict.fromkeys(["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"], 0)
    problems = []
    unimplemented = {}
    total = 0
    for agent, cases in index.items():
        for case_id in sorted(cases, key=case_key):
            entry = cases[case_id]
            verdict = classify(entry)
            counts[verdict] += 1
            total += 1
            if verdict == "UNIMPLEMENTED":
                section = case_id.split(".")[0] + ".*"
                unimplemented[section] = unimplemented.get(section, 0) + 1
            elif verdict not in ("OK", "INFORMATIONAL"):
                problems.append(f"  {verdict:13} {case_id:8} {reason(report_dir, entry)}")
    print(f"autobahn {role}: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    for line in problems:
        print(line)
    for section, n in unimplemented.items():
        print(f"  UNIMPLEMENTED {section}: {n} cases")
    failed = counts["FAILED"] + counts["NON-STRICT"] > 0
    if total < min_cases:
        print(f"autobahn {role}: only {total} cases of {min_cases} ran")
        failed = True
    if counts["UNIMPLEMENTED"] and not allow_unimplemented:
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
