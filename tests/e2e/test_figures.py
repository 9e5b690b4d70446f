"""Figures come back: what the program shows with matplotlib arrives as a PNG in its place among the output.

Through the real stack, under eager and serial alike: the same images in the same order, never one
at a batch boundary, and the figures still open at the program's end after everything it printed.
"""

from __future__ import annotations

import io
import textwrap

import pytest
from PIL import Image

from eager.common.protocol import Figure, Output, SessionStatus
from eager.client import Client
from eager.replay import SpeedProfile
from tests.helpers import answer_of, collect

pytestmark = pytest.mark.slow

PROGRAM = textwrap.dedent("""\
    import matplotlib.pyplot as plt
    print("before")
    plt.plot([1, 2, 3])
    plt.show()
    print("between")
    figure, axes = plt.subplots(figsize=(2, 1), dpi=50)
    axes.bar([1, 2], [3, 4])
    figure.show()
    print("after")
    plt.figure(figsize=(3, 2), dpi=40)
    plt.plot([3, 1])
    print("end")
    """)


def sequence(events: list) -> list[str | tuple[int, int]]:
    """The output lines and the figures (as their pixel sizes), in the order they arrived."""
    seen: list[str | tuple[int, int]] = []
    for event in events:
        if isinstance(event, Output):
            seen += [line for line in event.text.splitlines() if line]
        elif isinstance(event, Figure):
            assert event.image().startswith(b"\x89PNG\r\n\x1a\n")
            seen.append(Image.open(io.BytesIO(event.image())).size)
    return seen


def test_figures_arrive_as_pngs_in_their_place_under_eager_and_serial(replay_stack) -> None:
    settings, _ = replay_stack({"figures": answer_of(PROGRAM)}, SpeedProfile(ttft_s=0.05, tokens_per_s=200.0))
    expected = ["before", (640, 480), "between", (100, 50), "after", "end", (120, 80)]
    with Client(settings) as client:
        for gate in ("eager", "serial"):
            events, summary = collect(client.submit(messages=[{"role": "user", "content": "plot"}], model="figures",
                                                    gate=gate))
            assert summary.status is SessionStatus.OK, summary
            assert sequence(events) == expected, gate
            figures = [event for event in events if isinstance(event, Figure)]
            assert [figure.number for figure in figures] == [1, 2, 3]
