"""Load: N sessions, C at a time, through a stack with M executors; throughput, latency percentiles, errors.

The closed loop keeps `concurrency` sessions in flight: each client thread submits a session, waits for its
terminal Summary, and submits the next, until `sessions` have been submitted. With more sessions in flight
than executors, sessions wait in the executor queue; each Summary says how long (`queue_wait_s`).

The pure part (Sample -> Report, the tables, where the curve bends) is separate from the I/O (run_sessions
against a running stack, run_point with a stack of its own, sweep over executor counts with a replay model).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psutil

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.protocol import Gate, SessionStatus, Summary
from eager.client import Client, Overloaded
from eager.quantiles import quantile

REPLAY_MODEL = "load"
PROMPT = [{"role": "user", "content": "Summarise a million random numbers."}]
OVERLOADED = "overloaded"  # refused at submit by the admission limit (EAGER_MAX_QUEUED): never started
CLIENT_ERROR = "client_error"  # the client itself failed (Redis unreachable at submit, say)
REST = "rest of the machine"  # CPU the machine spent outside the generator and the stages: Redis, the kernel, others
QUANTILES = (0.5, 0.9, 0.99)
BACKOFF_S = 1.0  # a client refused by the admission limit waits this long before its next session

# A realistic answer: prose, one code block of a few statements, about 0.9 s of CPU in all on this machine.
ANSWER = '''I will draw a million samples and summarise them step by step.

```python
import random
import statistics

random.seed(11)
values = [random.gauss(0, 1) for _ in range(1_000_000)]
print("mean:", round(statistics.fmean(values), 3))

ranked = sorted(values)
print("median:", round(ranked[len(ranked) // 2], 3))

counts = {}
for v in values:
    bucket = round(v, 1)
    counts[bucket] = counts.get(bucket, 0) + 1
print("buckets:", len(counts), "mode:", max(counts, key=counts.get))

walk = 0
for step in range(4_000_000):
    walk += 1 if (step * 7919) % 13 < 6 else -1
print("walk ends at", walk)
```

The seed is fixed, so every run prints the same numbers.
'''


# --------------------------------------------------------------------------- pure: samples to reports


@dataclass(frozen=True)
class Sample:
    """One submitted session as the load generator saw it (times: wall-clock ns, comparable across processes)."""

    status: str  # a SessionStatus value, OVERLOADED or CLIENT_ERROR
    submitted_ns: int  # the client called submit
    done_ns: int  # the client had the terminal Summary (or the refusal)
    started_ns: int | None = None  # an executor took the session off the queue
    finished_ns: int | None = None  # the Summary was made
    e2e_s: float | None = None
    ttft_s: float | None = None
    detail: str | None = None

    @property
    def queue_wait_s(self) -> float | None:
        return None if self.started_ns is None else max(0.0, (self.started_ns - self.submitted_ns) / 1e9)

    @property
    def accepted(self) -> bool:
        """Submitted and owed a terminal Summary (a refusal or a client failure is not)."""
        return self.status not in (OVERLOADED, CLIENT_ERROR)

    @classmethod
    def of(cls, summary: Summary, done_ns: int) -> Sample:
        return cls(summary.status.value, summary.submitted_ns, done_ns, summary.started_ns, summary.finished_ns,
                   summary.e2e_s, summary.ttft_s, summary.detail)


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles | None:
        return cls(*(quantile(values, q) for q in QUANTILES)) if values else None

    def __str__(self) -> str:
        return f"{self.p50:.2f} / {self.p90:.2f} / {self.p99:.2f}"


@dataclass(frozen=True)
class Report:
    """One load point. Latencies are over the sessions that ended ok; errors are counted by status."""

    executors: int
    concurrency: int
    sessions: int  # submitted (refusals included)
    wall_s: float  # first submit to last terminal event
    statuses: dict[str, int]
    e2e_s: Percentiles | None
    queue_wait_s: Percentiles | None
    ttft_s: Percentiles | None
    cpu_busy: float | None = None  # fraction of the machine's CPU in use during the point (all processes)
    cpu_cores: int | None = None
    cpu_s: dict[str, float] | None = None  # CPU seconds of the point by process: the generator, each stage, REST
    details: dict[str, str] = dataclasses.field(default_factory=dict)  # per outcome but ok: the first one's detail

    @property
    def ok(self) -> int:
        return self.statuses.get(SessionStatus.OK.value, 0)

    @property
    def accepted(self) -> int:
        return self.sessions - self.statuses.get(OVERLOADED, 0) - self.statuses.get(CLIENT_ERROR, 0)

    @property
    def errors(self) -> dict[str, int]:
        """Every outcome but ok, refusals included."""
        return {status: n for status, n in sorted(self.statuses.items()) if status != SessionStatus.OK.value}

    @property
    def throughput(self) -> float:
        """Sessions that ended ok, per second of the run (its start, while the first sessions are generated and
        none has ended yet, included: the more sessions, the less that weighs)."""
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(ok=self.ok, accepted=self.accepted, errors=self.errors, throughput=self.throughput,
                    cpu_bound=cpu_bound(self))
        return data


def aggregate(samples: Sequence[Sample], executors: int, concurrency: int, cpu_busy: float | None = None,
              cpu_cores: int | None = None, cpu_s: Mapping[str, float] | None = None) -> Report:
    if not samples:
        raise ValueError("no sessions to aggregate")
    wall_s = (max(s.done_ns for s in samples) - min(s.submitted_ns for s in samples)) / 1e9
    ok = [s for s in samples if s.status == SessionStatus.OK.value]
    return Report(
        executors=executors, concurrency=concurrency, sessions=len(samples), wall_s=wall_s,
        statuses=dict(sorted(Counter(s.status for s in samples).items())),
        e2e_s=Percentiles.of([s.e2e_s for s in ok if s.e2e_s is not None]),
        queue_wait_s=Percentiles.of([s.queue_wait_s for s in ok if s.queue_wait_s is not None]),
        ttft_s=Percentiles.of([s.ttft_s for s in ok if s.ttft_s is not None]),
        cpu_busy=cpu_busy, cpu_cores=cpu_cores, cpu_s=None if cpu_s is None else dict(cpu_s),
        details={status: detail for s in reversed(samples)
                 if (status := s.status) != SessionStatus.OK.value and (detail := s.detail)},
    )


def gains(reports: Sequence[Report]) -> list[float | None]:
    """Per point, how much of the ideal gain from the previous point's executors its throughput got: 1 is linear
    scaling (twice the executors, twice the throughput), 0 no gain at all, below 0 a loss. None for the first."""
    out: list[float | None] = [None]
    for before, after in itertools.pairwise(reports):
        ideal = after.executors / before.executors - 1
        got = after.throughput / before.throughput - 1 if before.throughput > 0 else 0.0
        out.append(got / ideal if ideal > 0 else None)
    return out


def bend(reports: Sequence[Report], threshold: float = 0.5) -> int | None:
    """The executor count after which adding executors stops paying: the last point before the first whose
    gain (see `gains`) falls below `threshold`. None if every step scaled (no bend within the sweep)."""
    ordered = sorted(reports, key=lambda report: report.executors)
    for before, gain in zip(ordered, gains(ordered)[1:]):
        if gain is not None and gain < threshold:
            return before.executors
    return None


def _errors_cell(report: Report) -> str:
    return ", ".join(f"{status} {n}" for status, n in report.errors.items()) or "none"


def markdown(reports: Sequence[Report]) -> str:
    """One row per point: throughput, its gain over the previous point, latencies, CPU, errors."""
    header = ("| executors | sessions | concurrency | wall | sessions/s | gain vs previous | e2e p50 / p90 / p99 "
              "| queue wait p50 / p90 / p99 | CPU busy | errors |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for report, gain in zip(reports, gains(reports)):
        cpu = "-" if report.cpu_busy is None else f"{report.cpu_busy:.0%}"
        lines.append(
            f"| {report.executors} | {report.sessions} | {report.concurrency} | {report.wall_s:.1f} s "
            f"| {report.throughput:.2f} | {'-' if gain is None else f'{gain:.2f}'} | {report.e2e_s or '-'} s "
            f"| {report.queue_wait_s or '-'} s | {cpu} | {_errors_cell(report)} |")
    return "\n".join(lines) + "\n"


def cpu_per_session(report: Report) -> dict[str, float]:
    """CPU seconds per session that ended ok, by process (empty if not measured or nothing ended ok)."""
    if not report.cpu_s or not report.ok:
        return {}
    return {name: report.cpu_s[name] / report.ok for name in sorted(report.cpu_s, key=lambda n: (n == REST, n))}


def cpu_bound(report: Report) -> float | None:
    """The most sessions per second the machine's cores could end at this CPU cost per session."""
    per = sum(cpu_per_session(report).values())
    return report.cpu_cores / per if report.cpu_cores and per > 0 else None


def cpu_table(reports: Sequence[Report]) -> str:
    """CPU seconds per ok session, one column per process kind: where the cores went."""
    names = sorted({name for report in reports for name in cpu_per_session(report)}, key=lambda n: (n == REST, n))
    if not names:
        return ""
    lines = ["| executors | " + " | ".join(names) + " | all |", "|---|" + "---|" * (len(names) + 1)]
    for report in reports:
        per = cpu_per_session(report)
        cells = [f"{per[name]:.2f}" if name in per else "-" for name in names]
        lines.append(f"| {report.executors} | " + " | ".join(cells) + f" | {sum(per.values()):.2f} |")
    return "\n".join(lines) + "\n"


def text(report: Report) -> str:
    """One point as a few human lines."""
    cpu = "" if report.cpu_busy is None else f", CPU {report.cpu_busy:.0%} busy"
    per = cpu_per_session(report)
    return (f"{report.sessions} sessions, {report.concurrency} at a time, {report.executors} executor(s): "
            f"{report.wall_s:.1f} s, {report.throughput:.2f} sessions/s ok{cpu}\n"
            f"  end-to-end  p50/p90/p99 {report.e2e_s or '-'} s\n"
            f"  queue wait  p50/p90/p99 {report.queue_wait_s or '-'} s\n"
            f"  first token p50/p90/p99 {report.ttft_s or '-'} s\n"
            + (f"  CPU per session: {', '.join(f'{name} {seconds:.2f} s' for name, seconds in per.items())}\n"
               if per else "")
            + f"  ok {report.ok} of {report.accepted} accepted; errors: {_errors_cell(report)}"
            + "".join(f"\n    {status}, the first: {detail}" for status, detail in sorted(report.details.items())))


# --------------------------------------------------------------------------- I/O: running sessions


def run_sessions(settings: Settings, sessions: int, concurrency: int, *, model: str | None = None,
                 gate: Gate = Gate.EAGER, on_done: Callable[[Sample], None] = lambda sample: None,
                 backoff_s: float = BACKOFF_S) -> list[Sample]:
    """Run `sessions` sessions against the stack `settings` names, `concurrency` at a time (each thread its own
    Client). A refused submission (Overloaded) is a sample too; its thread waits `backoff_s`, as a polite client
    would, and goes on with the next session. Interrupted (Ctrl-C), it cancels the sessions in flight and submits
    no more."""
    if sessions < 1 or concurrency < 1:
        raise ValueError("sessions and concurrency must be at least 1")
    lock, stop = threading.Lock(), threading.Event()
    samples: list[Sample] = []
    remaining = [sessions]
    in_flight: dict[str, Any] = {}

    def take() -> bool:
        with lock:
            if stop.is_set() or remaining[0] == 0:
                return False
            remaining[0] -= 1
            return True

    def record(sample: Sample) -> None:
        with lock:
            samples.append(sample)
            on_done(sample)

    def worker(client: Client) -> None:
        with client:
            while take():
                submitted = now_ns()
                try:
                    session = client.submit(messages=PROMPT, model=model, gate=gate)
                except Overloaded as exc:
                    record(Sample(OVERLOADED, submitted, now_ns(), detail=str(exc)))
                    stop.wait(backoff_s)
                    continue
                except Exception as exc:  # noqa: BLE001 - a load generator reports every failure as a sample
                    record(Sample(CLIENT_ERROR, submitted, now_ns(), detail=repr(exc)))
                    continue
                in_flight[session.id] = session
                try:
                    summary = session.result()
                except Exception as exc:  # noqa: BLE001
                    record(Sample(CLIENT_ERROR, submitted, now_ns(), detail=repr(exc)))
                    continue
                finally:
                    in_flight.pop(session.id, None)
                record(Sample.of(summary, now_ns()))

    clients = [Client(settings) for _ in range(min(concurrency, sessions))]  # a Redis that is down fails here
    threads = [threading.Thread(target=worker, args=(client,), name=f"load-{n}", daemon=True)
               for n, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()
        for session in list(in_flight.values()):
            session.cancel("the load generator was stopped")
        raise
    return sorted(samples, key=lambda sample: sample.submitted_ns)


def _process_cpu() -> dict[str, float]:
    """CPU seconds so far of this process and of each child by kind (a stage's count includes what it reaped:
    an executor's work horses and the interpreters they ran)."""
    from eager.common.protocol import STAGES

    own = psutil.Process()
    times = own.cpu_times()
    out = {"load generator": times.user + times.system}
    for child in own.children():
        try:
            argv, times = child.cmdline(), child.cpu_times()
        except psutil.Error:
            continue
        name = argv[-1] if argv and argv[-1] in STAGES else Path(argv[0]).name if argv else "other"
        out[name] = out.get(name, 0.0) + times.user + times.system + times.children_user + times.children_system
    return out


class _CpuMeter:
    """Between enter and exit: the machine's CPU use as a fraction of all its cores, and CPU seconds by process."""

    def __enter__(self) -> Self:
        self._before, self._processes = psutil.cpu_times(), _process_cpu()
        self.busy: float | None = None
        self.seconds: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        after, processes = psutil.cpu_times(), _process_cpu()
        total = sum(after) - sum(self._before)
        idle = (after.idle + getattr(after, "iowait", 0.0)) - (self._before.idle + getattr(self._before, "iowait", 0.0))
        self.busy = max(0.0, min(1.0, 1 - idle / total)) if total > 0 else None
        self.seconds = {name: round(seconds - self._processes.get(name, 0.0), 3)
                        for name, seconds in sorted(processes.items())}
        self.seconds[REST] = round(max(0.0, total - idle - sum(self.seconds.values())), 3)


def run_point(settings: Settings, executors: int, sessions: int, concurrency: int, *, model: str | None = None,
              gate: Gate = Gate.EAGER, on_done: Callable[[Sample], None] = lambda sample: None) -> Report:
    """Start a stack of `executors` executors (and one producer, one detector) as separate processes in
    `settings.namespace`, which must be this point's alone, run the load through it, stop it, aggregate."""
    from eager.stack import LocalStack

    with LocalStack(settings, executors=executors, forget=True) as ready, _CpuMeter() as cpu:
        samples = run_sessions(ready, sessions, concurrency, model=model, gate=gate, on_done=on_done)
    return aggregate(samples, executors, concurrency, cpu.busy, psutil.cpu_count(), cpu.seconds)


def running_executors(settings: Settings) -> int:
    """How many executors of the configured stack are alive (0: no running stack)."""
    from eager.common.connection import connect
    from eager.common.heartbeat import alive
    from eager.common.protocol import Keys

    client = connect(settings)
    try:
        return len(alive(client, Keys(settings.namespace), "executor"))
    finally:
        client.close()


def run_running(settings: Settings, sessions: int, concurrency: int | None, *, model: str | None = None,
                gate: Gate = Gate.EAGER, on_done: Callable[[Sample], None] = lambda sample: None) -> Report:
    """The load against the stack running in `settings.namespace` and its model; `concurrency` defaults to twice
    its executors. Raises ValueError if no executor runs there."""
    executors = running_executors(settings)
    if not executors:
        raise ValueError(f"no executor runs in namespace {settings.namespace!r}")
    concurrency = concurrency or 2 * executors
    return aggregate(run_sessions(settings, sessions, concurrency, model=model, gate=gate, on_done=on_done),
                     executors, concurrency)


def sweep(settings: Settings, answer: str, profile: Any, counts: Sequence[int], sessions: int,
          concurrency: int, *, gate: Gate = Gate.EAGER, on_done: Callable[[Sample], None] = lambda sample: None,
          on_point: Callable[[Report], None] = lambda report: None) -> list[Report]:
    """The same load for each executor count: one replay model serving `answer` at `profile`'s speed, and per
    point a fresh stack in a namespace of its own (forgotten afterwards)."""
    from eager.replay import ReplayServer
    from eager.replay_stack import on_replay

    reports = []
    with ReplayServer({REPLAY_MODEL: answer}, profile) as server:
        for executors in counts:
            report = run_point(on_replay(settings, server, REPLAY_MODEL, "load"), executors, sessions, concurrency,
                               gate=gate, on_done=on_done)
            on_point(report)
            reports.append(report)
    return reports


# --------------------------------------------------------------------------- I/O: writing results


def executor_counts(sweep: str | None, executors: int) -> list[int]:
    """`--sweep 1,2,4` as a list, else the one count; ValueError for anything but positive integers."""
    try:
        counts = [int(n) for n in sweep.split(",")] if sweep else [executors]
    except ValueError:
        raise ValueError(f"a sweep is a comma list of executor counts, not {sweep!r}") from None
    if any(n < 1 for n in counts):
        raise ValueError("executor counts must be at least 1")
    return counts


def sweep_summary(reports: Sequence[Report]) -> str:
    """The sweep's table, its CPU by process, and where throughput stopped scaling."""
    where = bend(reports)
    return (markdown(reports) + "\n" + cpu_table(reports) + "\n"
            + ("no bend within the sweep" if where is None else f"throughput stops scaling after {where} executor(s)"))


def write(reports: Sequence[Report], out: Path, parameters: Mapping[str, Any]) -> list[Path]:
    """load.md, load.json and load.png (throughput and latency against executors) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "load.md", out / "load.json", out / "load.png"
    where = bend(reports)
    summary = ("throughput keeps scaling up to the largest executor count" if where is None
               else f"throughput stops scaling after {where} executor(s)")
    command = parameters.get("command")
    cpu = cpu_table(reports)
    md.write_text(("" if command is None else f"`{command}`\n\n") + markdown(reports) + f"\n{summary}.\n"
                  + (f"\nCPU seconds per session that ended ok, by process:\n\n{cpu}" if cpu else ""))
    js.write_text(json.dumps({"parameters": dict(parameters), "bend_after": where,
                              "points": [report.to_json() for report in reports]}, indent=2) + "\n")
    plot(reports, png)
    return [md, js, png]


def plot(reports: Sequence[Report], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [report.executors for report in reports]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(xs, [report.throughput for report in reports], "o-", color="#1f77b4", label="measured")
    if reports and reports[0].throughput > 0:
        base = reports[0]
        left.plot(xs, [base.throughput * x / base.executors for x in xs], ":", color="#999999",
                  label=f"linear from {base.executors}")
    bounds = [(x, bound) for x, report in zip(xs, reports) if (bound := cpu_bound(report)) is not None]
    if bounds:
        left.plot([b[0] for b in bounds], [b[1] for b in bounds], "--", color="#d62728", linewidth=1,
                  label=f"CPU bound: {reports[0].cpu_cores} cores / CPU s per session")
    left.set_ylim(bottom=0, top=max(report.throughput for report in reports) * 1.4 if reports else None)
    left.set_title("throughput (sessions ended ok per second)", fontsize=10)
    for name, colour, attr in (("end-to-end", "#d62728", "e2e_s"), ("queue wait", "#2ca02c", "queue_wait_s")):
        for q, style in (("p50", "o-"), ("p90", "s--")):
            points = [(x, getattr(getattr(report, attr), q)) for x, report in zip(xs, reports)
                      if getattr(report, attr) is not None]
            right.plot([p[0] for p in points], [p[1] for p in points], style, color=colour, label=f"{name} {q}",
                       markersize=4)
    right.set_ylim(bottom=0)
    right.set_title("latency per session (seconds)", fontsize=10)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.set_xlabel("executors")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    first = reports[0] if reports else None
    if first is not None:
        figure.suptitle(f"{first.sessions} sessions, {first.concurrency} in flight, on {first.cpu_cores or '?'} cores",
                        fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
