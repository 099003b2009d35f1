#!/usr/bin/env python3
"""Counts tests across meson test logs and prints 'N passed, N failed, N skipped'.

A doctest executable counts its test cases (from its '[doctest] test cases:' line); any other
test counts once. Skipped counts whole meson tests that did not run: result SKIP, which meson
gives a test exiting 77 (a missing dependency such as mpirun or torch). Doctest's own "skipped"
column is not counted: it lists the test cases a --test-case filter left out, not tests that
were asked for and could not run.
Usage: test_summary.py BUILD_DIR [BUILD_DIR ...]; exit status 1 on any failure (a skip is not one).
"""
import json, re, sys

DOCTEST = re.compile(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed")


def count(records):
    """(passed, failed, skipped) of one build's testlog.json records."""
    passed = failed = skipped = 0
    for t in records:
        if t["result"] == "SKIP":
            skipped += 1
            continue
        ok = t["result"] in ("OK", "EXPECTEDFAIL")
        m = DOCTEST.search(t.get("stdout") or "")
        if m:
            passed += int(m.group(2))
            failed += int(m.group(3))
            if not ok and int(m.group(3)) == 0:
                failed += 1  # crashed or timed out after the summary
        else:
            passed += ok
            failed += not ok
    return passed, failed, skipped


def main(builds):
    passed = failed = skipped = 0
    for build in builds:
        try:
            lines = open(f"{build}/meson-logs/testlog.json").read().splitlines()
        except OSError as e:
            print(f"test_summary: cannot read {build}/meson-logs/testlog.json: {e}")
            failed += 1
            continue
        p, f, s = count(json.loads(line) for line in lines if line.strip())
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
