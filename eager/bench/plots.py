"""Benchmark plots (matplotlib, the optional `plots` extra): eager vs serial per task, and one
session's waterfall showing generation, detection and execution overlapping."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eager.bench.measure import Run

GATE_COLOURS = {"serial": "#9e9e9e", "eager": "#1f77b4", "batch": "#ff7f0e"}


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("plots need matplotlib: pip install -e '.[plots]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def end_to_end(runs: Sequence[Run], path: Path) -> None:
    """Per profile, every task's end-to-end latency under each gate, tasks sorted by serial's."""
    plt = _pyplot()
    profiles = list(dict.fromkeys(run.profile for run in runs))
    figure, axes = plt.subplots(len(profiles), 1, figsize=(11, 3.2 * len(profiles)), squeeze=False)
    for axis, profile in zip(axes[:, 0], profiles, strict=True):
        mine = [run for run in runs if run.profile == profile and run.status == "ok"]
        serial = {run.task: run.e2e_s for run in mine if run.gate == "serial"}
        order = sorted(serial, key=serial.get)
        for gate, colour in GATE_COLOURS.items():
            times = {run.task: run.e2e_s for run in mine if run.gate == gate}
            xs = [i for i, task in enumerate(order) if task in times]
            axis.plot(xs, [times[order[i]] for i in xs], "o-" if gate != "batch" else "s--", markersize=3,
                      linewidth=1, color=colour, label=gate)
        ideal = {run.task: run.ideal_s for run in mine if run.gate == "eager"}
        xs = [i for i, task in enumerate(order) if task in ideal]
        axis.plot(xs, [ideal[order[i]] for i in xs], "_", color="black", markersize=8, label="eager's ideal bound")
        axis.set_title(f"profile {profile}: end-to-end latency per task (sorted by serial)", fontsize=10)
        axis.set_ylabel("seconds")
        axis.set_xticks([])
        axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def waterfall(serial: Run, eager: Run, path: Path) -> None:
    """One task, serial above eager: generation, each batch's readiness and execution on one time axis."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(11, 3.8))
    for row, run in enumerate((eager, serial)):
        y = row * 2
        ttft, generation = run.ttft_s or 0.0, run.generation_s or 0.0
        axis.broken_barh([(0, ttft)], (y + 1.0, 0.6), color="#dddddd")
        axis.broken_barh([(ttft, generation - ttft)], (y + 1.0, 0.6), color="#aec7e8",
                         label="generation" if row == 0 else None)
        axis.broken_barh([(b.started_s, b.exec_s) for b in run.batches], (y + 0.2, 0.6),
                         color=GATE_COLOURS[run.gate], edgecolor="white", label=f"execution ({run.gate})")
        axis.plot([b.ready_s for b in run.batches], [y + 0.9] * len(run.batches), "v", color="black", markersize=4,
                  label="batch's last chunk proven" if row == 0 else None)
        axis.text(run.e2e_s + 0.02, y + 0.5, f"{run.e2e_s:.2f} s", va="center", fontsize=9)
    axis.set_yticks([1, 3], [f"eager ({len(eager.batches)} batches)", "serial"])
    axis.set_xlabel("seconds from the request")
    axis.set_title(f"{eager.task}, profile {eager.profile}: generation, detection and execution", fontsize=10)
    axis.set_ylim(-0.2, 3.8)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
