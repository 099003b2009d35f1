#!/usr/bin/python3
"""Crash-safe `sieve train` runs, end to end on a tiny shapes folder (fast recipe, cifar-resnet8
width 4, 28x28 images: ~0.1 s per epoch).

    python3 test_crash.py SIEVE_EXE [SOURCE_ROOT]      exit 0 = pass, 77 = skipped, else fail

One run B is interrupted every way and resumed each time; its final weights must equal an
uninterrupted run A's bit for bit and its metrics.jsonl must hold each epoch once, with A's losses:
  - a second train on B while one trains fails at once, naming B and the holder's pid (run lock);
  - SIGTERM: stops at a step boundary with last/ saved, says how to resume, exit 143;
  - a line logged after the checkpoint and a torn last line (what a kill between an epoch's line
    and its checkpoint leaves) are cut from metrics.jsonl on resume;
  - SIGINT: exit 130; SIGINT then SIGTERM at once: the second exits at once (130 or 143);
  - kill -9 (with --checkpoint-minutes near 0: last/ saved after nearly every step): the lock
    is gone with the process and the next resume continues;
A run C is killed with SIGKILL at 10 seeded random moments (start-up, training, a checkpoint's
save, calibration: wherever the moment falls) and resumed after each; it too must end equal to A
bit for bit, with each epoch logged once and no file A lacks;
and `sieve report` draws a run whose metrics.jsonl ends in a torn line, with a warning.
"""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import make_shapes_folder  # noqa: E402

EXE = os.path.abspath(sys.argv[1])
EPOCHS = 30
NET = ["--arch", "cifar-resnet8", "--width", "4", "--batch", "8", "--workers", "1", "--seed", "5",
       "--epochs", str(EPOCHS)]
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def weights(run):
    with open(os.path.join(run, "last", "model.safetensors"), "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in header.items()}


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        text = f.read()
    check(text == "" or text.endswith("\n"), f"metrics.jsonl of {run} ends with a complete line")
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def state(run):
    return json.load(open(os.path.join(run, "last", "state.json")))


def start(*args):
    return subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(p, needle, timeout=120):
    """Read p's stderr until a line containing `needle`; returns the lines read."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    print("".join(seen))
    raise AssertionError(f"no line with {needle!r} in the output of pid {p.pid}")


def signal_running(p, *sigs):
    """Send `sigs` to p while it is stopped (SIGSTOP ... SIGCONT): it cannot finish its run
    between our reading a line and the signals landing, however loaded the machine is."""
    p.send_signal(signal.SIGSTOP)
    for s in sigs:
        p.send_signal(s)
    p.send_signal(signal.SIGCONT)


def finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def random_kills(data, run, t_a, want_w, want_m, want_files, kills=10):
    """SIGKILL `sieve train` into `run` at `kills` seeded random moments, resuming after each
    (a fresh --out again while the kill left no config.json), then let it finish."""
    rnd = random.Random(2026)
    log = run + ".log"
    landed = []

    def launch():
        args = ["--resume", run] if os.path.exists(os.path.join(run, "config.json")) else ["--data", data, "--out", run, *NET]
        # Mid-epoch saves every ~0.3 s as well as the epoch ends: kills also land inside a save.
        with open(log, "a") as f:
            f.write(f"--- sieve train {' '.join(args[:2])}\n")
            return subprocess.Popen([EXE, "train", *args, "--checkpoint-minutes", "0.005"], stdout=subprocess.DEVNULL,
                                    stderr=f)

    p = launch()
    while len(landed) < kills:
        # Uniform over a quarter of an uninterrupted run (start-up included): every phase is
        # hit, and each life still makes progress on average.
        time.sleep(rnd.uniform(0.0, t_a / 4))
        if p.poll() is not None:  # finished (or failed) before the moment came
            if not check(p.returncode == 0, f"random kills: a resumed run failed (exit {p.returncode}); see {log}"):
                return
            break
        p.kill()
        p.wait()
        st = os.path.join(run, "last", "state.json")
        landed.append(json.load(open(st))["step"] if os.path.exists(st) else None)
        p = launch()
    print(f"random kills: {len(landed)} landed; step of last/ after each: {landed}", flush=True)
    p.wait(timeout=120)
    check(p.returncode == 0, f"random kills: the final resume exits 0 (exit {p.returncode}); see {log}")
    check(len(landed) >= kills // 2, f"random kills: at least {kills // 2} kills landed before the run finished: {landed}")
    got_w = weights(run)
    check(got_w.keys() == want_w.keys() and all(got_w[k] == want_w[k] for k in want_w),
          f"random kills: final weights equal the uninterrupted run's bit for bit (kills at steps {landed})")
    got_m = metrics(run)
    check([m["epoch"] for m in got_m] == list(range(1, EPOCHS + 1))
          and [m["loss"] for m in got_m] == [m["loss"] for m in want_m],
          f"random kills: metrics.jsonl holds each epoch once with A's losses: {[m['epoch'] for m in got_m]}")
    check(sorted(os.listdir(run)) == want_files and sorted(os.listdir(os.path.join(run, "last"))) ==
          sorted(os.listdir(os.path.join(os.path.dirname(run), "A", "last"))),
          f"random kills: the run folder holds what A's holds, no leftovers: {sorted(os.listdir(run))} vs {want_files}")


def main():
    if not os.access(EXE, os.X_OK):
        print(f"not an executable: {EXE}")
        return 1
    tmp = tempfile.mkdtemp(prefix="sieve_test_crash_")
    t_start = time.monotonic()
    try:
        data = os.path.join(tmp, "data")
        make_shapes_folder(data, np.random.default_rng(7))
        a, b = os.path.join(tmp, "A"), os.path.join(tmp, "B")

        t0 = time.monotonic()
        rc, _, err = finish(start("train", "--data", data, "--out", a, *NET, "--quiet"))
        if not check(rc == 0, f"uninterrupted run exits 0: {err[-500:]}"):
            return 1
        t_a = time.monotonic() - t0
        print(f"uninterrupted run: {t_a:.1f} s", flush=True)
        want_w, want_m = weights(a), metrics(a)
        total = state(a)["step"]
        check([m["epoch"] for m in want_m] == list(range(1, EPOCHS + 1)), "A logs each epoch once")

        # B trains; a second train on B is refused while it runs; SIGTERM stops it.
        p = start("train", "--data", data, "--out", b, *NET)
        wait_for_line(p, f"epoch 2/{EPOCHS}  step")
        p.send_signal(signal.SIGSTOP)  # holding the lock, mid-run
        rc2, _, err2 = finish(start("train", "--resume", b, "--quiet"), timeout=60)
        check(rc2 == 1 and f"run folder {b} is in use by another process (pid {p.pid}" in err2,
              f"a second train on a locked run fails naming the folder and pid {p.pid}: rc={rc2} {err2[-400:]}")
        signal_running(p, signal.SIGTERM)
        rc, _, err = finish(p)
        check(rc == 143, f"SIGTERM: exit 143, got {rc}: {err[-400:]}")
        check(f"stopped by SIGTERM" in err and f"sieve train --resume {b}" in err,
              f"SIGTERM: says where it saved and how to resume: {err[-300:]}")
        st = state(b)
        check(0 < st["step"] < total, f"SIGTERM stopped mid-run: step {st['step']} of {total}")
        done = [m["epoch"] for m in metrics(b)]
        check(done == list(range(1, st["epoch"] + 1)), f"after SIGTERM: epochs 1..{st['epoch']} logged once: {done}")
        check(not os.path.exists(os.path.join(b, "calibration.json")), "a stopped run does not calibrate")

        # What a kill between an epoch's line and its checkpoint leaves: a line past last/, a torn one.
        with open(os.path.join(b, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": st["epoch"] + 1, "step": st["step"] + 1, "loss": 9.5}) + "\n")
            f.write('{"epoch": %d, "st' % (st["epoch"] + 2))
        p = start("train", "--resume", b)
        lines = wait_for_line(p, "train: resumed from")
        check(any("cut back to the checkpoint" in l and "1 logged after it dropped, a torn last line dropped" in l
                  for l in lines), f"resume says what it cut from metrics.jsonl: {''.join(lines)[-400:]}")
        signal_running(p, signal.SIGINT)
        rc, _, err = finish(p)
        check(rc == 130 and "stopped by SIGINT" in err, f"SIGINT: exit 130, got {rc}: {err[-300:]}")

        # Two signals at once: the second does not wait for the save. Two different ones, since a
        # signal sent while the same one is pending merges with it; threads may take them in
        # either order, and the status is 128 + the second one handled.
        p = start("train", "--resume", b)
        wait_for_line(p, "train: resumed from")
        signal_running(p, signal.SIGINT, signal.SIGTERM)
        rc, _, err = finish(p)
        check(rc in (130, 143) and "second signal: exiting now" in err and "stopped by" not in err,
              f"SIGINT then SIGTERM: the second exits at once, without the stop: rc={rc} {err[-300:]}")

        # kill -9 while saving after nearly every step; the lock dies with the process.
        p = start("train", "--resume", b, "--checkpoint-minutes", "0.00001")
        wait_for_line(p, f"/{EPOCHS}  step")
        p.kill()
        finish(p)
        check(p.returncode == -signal.SIGKILL, f"kill -9: killed by SIGKILL ({p.returncode})")

        rc, _, err = finish(start("train", "--resume", b, "--quiet"))
        check(rc == 0, f"final resume exits 0: {err[-400:]}")
        got_w, got_m = weights(b), metrics(b)
        check(state(b)["step"] == total, f"B finished all {total} steps")
        check(got_w.keys() == want_w.keys() and all(got_w[k] == want_w[k] for k in want_w),
              "interrupted and resumed run's weights equal the uninterrupted run's bit for bit")
        check([m["epoch"] for m in got_m] == list(range(1, EPOCHS + 1)),
              f"metrics.jsonl holds each epoch once: {[m['epoch'] for m in got_m]}")
        check([m["loss"] for m in got_m] == [m["loss"] for m in want_m]
              and [m.get("val_map5") for m in got_m] == [m.get("val_map5") for m in want_m]
              and sum("val_map5" in m for m in want_m) == EPOCHS // 4,
              "the resumed run logged the uninterrupted run's losses and validation MAP@5 (every 4th epoch)")

        random_kills(data, os.path.join(tmp, "C"), t_a, want_w, want_m, sorted(os.listdir(a)))

        # report: a torn last line is skipped with a warning; corruption before it is still refused.
        with open(os.path.join(a, "metrics.jsonl"), "a") as f:
            f.write('{"epoch": 31, "lo')
        rc, _, err = finish(start("report", "--run", a, "--no-umap"))
        check(rc == 0 and "metrics.jsonl: the last line (" in err and "has no newline" in err,
              f"report skips a torn last line with a warning: rc={rc} {err[-400:]}")
        page = open(os.path.join(a, "report", "index.html"), encoding="utf-8").read() if rc == 0 else ""
        check("has no newline" in page, "the report page notes the torn line")
        with open(os.path.join(a, "metrics.jsonl"), "r+") as f:
            text = f.read()
            f.seek(0)
            f.write(text.replace('"epoch": 3,', '"epoch": 3 !', 1))
        rc, _, err = finish(start("report", "--run", a, "--no-umap"))
        check(rc == 1 and "metrics.jsonl:3" in err, f"report refuses a corrupt line before the torn one: rc={rc} {err[-300:]}")
    finally:
        if not os.environ.get("SIEVE_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)
    print(f"test_crash: {time.monotonic() - t_start:.1f} s", flush=True)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("test_crash: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
