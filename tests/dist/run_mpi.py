#!/usr/bin/env python3
"""Runs test_dist on 2 MPI ranks: the collective/equivalence tests must pass; the failure drills
(rank 1 throws; rank 1 stalls; rank 1 exits without a word) must end the whole job quickly, non-zero, with a clear message
naming the failing operation on the surviving rank (stall) or the failing rank (throw)."""
import os
import subprocess
import sys
import time

mpirun, exe = sys.argv[1], sys.argv[2]
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_btl="self,vader,tcp", OMPI_MCA_rmaps_base_oversubscribe="1",
           OMP_NUM_THREADS="1")  # one compute thread per rank: 2 ranks share the 2 cores
base = [mpirun, "--oversubscribe", "-np", "2", "--bind-to", "none"]
failures = []


def run(args, extra_env=None, timeout=150):
    t0 = time.monotonic()
    p = subprocess.run(base + [exe] + args, env=dict(env, **(extra_env or {})), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def expect(cond, what, out):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
        print(out[-4000:])


rc, out, secs = run(["--mpi"])
print(out[-3000:])
expect(rc == 0, f"2-rank tests pass (exit {rc}, {secs:.1f} s)", out)
expect("data-parallel" in out, "equivalence test ran on the ranks", out)

rc, out, secs = run(["--fail=throw"], {"SIEVE_MPI_TIMEOUT": "60"})
expect(rc != 0, f"throw drill: job fails (exit {rc})", out)
expect(secs < 30, f"throw drill: ends without waiting for the 60 s timeout ({secs:.1f} s)", out)
expect("rank 1 of 2: error: rank 1: simulated failure" in out, "throw drill: the failing rank says why", out)
expect("rank 0 of 2: terminated by the MPI launcher" in out, "throw drill: the other rank says why it stops", out)

rc, out, secs = run(["--fail=exit"], {"SIEVE_MPI_TIMEOUT": "10"})
expect(rc != 0, f"exit drill (rank 1 dies silently): job fails (exit {rc})", out)
expect(secs < 30, f"exit drill: ends within the 10 s timeout ({secs:.1f} s)", out)
expect("rank 0 of 2: " in out, "exit drill: the surviving rank says why it stops", out)

rc, out, secs = run(["--fail=stall"], {"SIEVE_MPI_TIMEOUT": "3"})
expect(rc != 0, f"stall drill: job fails (exit {rc})", out)
expect(secs < 40, f"stall drill: ends after the 3 s timeout, not the 120 s stall ({secs:.1f} s)", out)
expect("rank 0 of 2: allreduce 'gradient bucket 0' (1000 elements) did not complete within 3 s" in out,
       "stall drill: the waiting rank names the operation and the timeout", out)

print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
