"""What the jail costs an interpreter's start, step by step (the warm pool pays it before any session asks).

- claim: a slot uid, its leftovers killed, its cgroup made and limited;
- spawn: fork to exec, that is every layer the child takes in its preexec (namespaces, the read-only root
  built and pivoted into, uid, signals, seccomp);
- ready: from exec to the runner's first message (Python's own start, in the jail);
- close: the whole cgroup killed, the slot's group removed, the slot freed.

    .venv/bin/python benchmarks/jail.py --runs 20
    setpriv --bounding-set -sys_admin .venv/bin/python benchmarks/jail.py --isolation best-effort  # no namespaces
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

import click

from eager.executor_pool.interpreter import RUNNER
from eager.executor_pool.sandbox import Sandbox, SandboxConfig


def one_start(config: SandboxConfig, python: str) -> tuple[dict[str, float], str]:
    """The durations (ms) of one interpreter's start and end, and the layers it got."""
    marks = [time.perf_counter()]
    box = Sandbox.claim(config)
    marks.append(time.perf_counter())
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    proc = box.spawn(box.python(python), RUNNER, [str(req_r), str(rep_w)], stdin=subprocess.DEVNULL,
                     env={"PATH": "/usr/bin:/bin", "HOME": box.workdir()}, pass_fds=(req_r, rep_w))
    marks.append(time.perf_counter())
    os.close(req_r)
    os.close(rep_w)
    os.read(rep_r, 4)  # the length of the "ready" frame: the runner is up
    marks.append(time.perf_counter())
    isolation = box.isolation(proc.pid)
    box.kill(proc)
    box.release()
    for fd in (req_w, rep_r):
        os.close(fd)
    marks.append(time.perf_counter())
    steps = ("claim", "spawn", "ready", "close")
    return {step: (marks[i + 1] - marks[i]) * 1e3 for i, step in enumerate(steps)}, isolation


@click.command()
@click.option("--runs", default=20, show_default=True)
@click.option("--isolation", default="", help="EAGER_SANDBOX_ISOLATION for the run (default: as configured)")
@click.option("--python", default="", help="EAGER_INTERPRETER_PYTHON for the run (default: the executor's)")
def main(runs: int, isolation: str, python: str) -> None:
    config = SandboxConfig(isolation=isolation)
    one_start(config, python)  # the first start asks the interpreter for its prefixes, once per process
    samples = [one_start(config, python) for _ in range(runs)]
    click.echo(f"layers: {samples[-1][1]}")
    for step in samples[0][0]:
        values = sorted(sample[step] for sample, _ in samples)
        click.echo(f"  {step:<6} p50 {statistics.median(values):7.2f} ms   p90 {values[int(0.9 * (len(values) - 1))]:7.2f} ms")


if __name__ == "__main__":
    main()
