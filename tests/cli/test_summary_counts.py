"""tools/test_summary.py (the closing line of scripts/test.sh) on fake meson test logs: doctest
case counts, plain tests, tests skipped with exit 77 counted apart, doctest's filtered-out cases
not counted as skipped, exit status 1 on any failure.
Usage: test_summary_counts.py SOURCE_ROOT"""
import json, os, subprocess, sys, tempfile

tool = os.path.join(sys.argv[1], "tools", "test_summary.py")
DOCTEST_OUT = ("[doctest] test cases: {n} | {p} passed | {f} failed | {s} skipped\n"
               "[doctest] assertions: 10 | 10 passed | 0 failed |\n")


def build(root, name, records):
    os.makedirs(os.path.join(root, name, "meson-logs"))
    with open(os.path.join(root, name, "meson-logs", "testlog.json"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    return os.path.join(root, name)


def summary(*builds):
    r = subprocess.run([sys.executable, tool, *builds], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip().splitlines()[-1]


def check(cond, msg):
    if not cond:
        print("FAIL:", msg)
        sys.exit(1)


with tempfile.TemporaryDirectory() as d:
    # 7 doctest cases run (40 filtered out by --test-case: not skips), a plain test, two exit-77 skips.
    good = build(d, "good", [
        {"name": "unit", "result": "OK", "returncode": 0, "stdout": DOCTEST_OUT.format(n=47, p=7, f=0, s=40)},
        {"name": "cli_train", "result": "OK", "returncode": 0, "stdout": "ok\n"},
        {"name": "cli_mpi", "result": "SKIP", "returncode": 77, "stdout": "no mpirun\n"},
        {"name": "parity", "result": "SKIP", "returncode": 77, "stdout": ""},
    ])
    rc, line = summary(good)
    check(rc == 0 and line == "8 passed, 0 failed, 2 skipped", f"good logs: rc={rc} '{line}'")

    # A failing doctest case, a crash after the doctest summary, a failed plain test, one skip.
    bad = build(d, "bad", [
        {"name": "unit", "result": "FAIL", "returncode": 1, "stdout": DOCTEST_OUT.format(n=5, p=4, f=1, s=0)},
        {"name": "nn", "result": "FAIL", "returncode": -11, "stdout": DOCTEST_OUT.format(n=3, p=3, f=0, s=0)},
        {"name": "cli_predict", "result": "FAIL", "returncode": 1, "stdout": ""},
        {"name": "cli_mpi", "result": "SKIP", "returncode": 77, "stdout": ""},
    ])
    rc, line = summary(bad)
    check(rc == 1 and line == "7 passed, 3 failed, 1 skipped", f"bad logs: rc={rc} '{line}'")

    # Several build folders add up; a missing log is a failure that names the file.
    rc, line = summary(good, bad)
    check(rc == 1 and line == "15 passed, 3 failed, 3 skipped", f"two builds: rc={rc} '{line}'")
    rc, line = summary(good, os.path.join(d, "nowhere"))
    check(rc == 1 and line == "8 passed, 1 failed, 2 skipped", f"missing log: rc={rc} '{line}'")
    r = subprocess.run([sys.executable, tool, os.path.join(d, "nowhere")], capture_output=True, text=True)
    check("nowhere/meson-logs/testlog.json" in r.stdout, f"missing log not named: {r.stdout}")
print("test_summary.py counts: ok")
