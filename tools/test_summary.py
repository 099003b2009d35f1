#!/usr/bin/env python3
"""Counts passed and failed tests across meson test logs and prints 'N passed, N failed'.

A doctest executable counts its test cases (from its '[doctest] test cases:' line); any other
test counts once. Usage: test_summary.py BUILD_DIR [BUILD_DIR ...]; exit status 1 on failure.
"""
import json, re, sys

passed = failed = 0
for build in sys.argv[1:]:
    try:
        lines = open(f"{build}/meson-logs/testlog.json").read().splitlines()
    except OSError as e:
        print(f"test_summary: cannot read {build}/meson-logs/testlog.json: {e}")
        failed += 1
        continue
    for line in lines:
        t = json.loads(line)
        ok = t["result"] in ("OK", "EXPECTEDFAIL", "SKIP")
        m = re.search(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed", t.get("stdout", ""))
        if m:
            passed += int(m.group(2))
            failed += int(m.group(3))
            if not ok and int(m.group(3)) == 0:
                failed += 1  # crashed or timed out after the summary
        elif t["result"] != "SKIP":
            passed += ok
            failed += not ok
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
