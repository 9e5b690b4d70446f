"""What each local model costs here: its file on disk, the server's memory once loaded, time to first token and
tokens per second, for one short coding prompt asked a few times at temperature 0 (the README's table).

Each model is served by llama.cpp exactly as `eager run` serves it (`eager.local_model.Served`). The first
request after loading pays for the prompt in full; llama.cpp reuses a repeated prompt, so the later requests'
first token is cheaper: both are shown.

    .venv/bin/python benchmarks/local_models.py --requests 3
"""

from __future__ import annotations

import dataclasses
import socket
import statistics
import tempfile
import time
from pathlib import Path

import click
import openai
import psutil

from eager.common.config import Settings
from eager.local_model import MODELS, Served, chosen

PROMPT = "Write a Python function is_prime(n) and print the primes below 50. Answer with one ```python code block."


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(settings: Settings, requests: int) -> tuple[float, float, list[float], list[float]]:
    """(file MB, server RSS MB, time to first token per request, tokens/s per request)."""
    base_url = f"http://127.0.0.1:{_port()}/v1"
    firsts, rates = [], []
    with tempfile.TemporaryDirectory() as directory, Served(settings, base_url, Path(directory) / "log") as served:
        client = openai.OpenAI(base_url=base_url, api_key="not-needed")
        for _ in range(requests):
            started, first, pieces = time.perf_counter(), 0.0, 0
            stream = client.chat.completions.create(model="local", messages=[{"role": "user", "content": PROMPT}],
                                                    stream=True, temperature=0.0, max_tokens=300)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    first = first or time.perf_counter()
            firsts.append(first - started)
            rates.append((pieces - 1) / (time.perf_counter() - first))
        assert served.process is not None
        rss = psutil.Process(served.process.pid).memory_info().rss / 2**20
    size = chosen(settings).gguf(Path(settings.model_dir)).stat().st_size / 2**20
    return size, rss, firsts, rates


@click.command()
@click.option("--requests", default=3, show_default=True, help="requests per model")
def main(requests: int) -> None:
    print("| model | file | server memory | first token (cold / repeated prompt) | tokens/s |")
    print("|---|---|---|---|---|")
    for name, model in MODELS.items():
        size, rss, firsts, rates = measure(dataclasses.replace(Settings.from_env(), local_model=name), requests)
        print(f"| {model.title} | {size:.0f} MB | {rss:.0f} MB | {firsts[0]:.2f} s / "
              f"{statistics.median(firsts[1:] or firsts):.2f} s | {statistics.median(rates):.1f} |")


if __name__ == "__main__":
    main()
