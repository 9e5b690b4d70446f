"""The speed profiles every benchmark run is replayed under: one table, shown in the README.

Each stands for a class of model deployment, as a time to the first token and a steady
token rate, with 20 % seeded jitter on the gaps between tokens: the same profile replays
the same tokens at the same times for every gate, so serial and eager see one stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from eager.replay import SpeedProfile

JITTER = 0.2
SEED = 7


@dataclass(frozen=True)
class Profile:
    name: str
    ttft_s: float
    tokens_per_s: float
    stands_for: str

    @property
    def speed(self) -> SpeedProfile:
        return SpeedProfile(ttft_s=self.ttft_s, tokens_per_s=self.tokens_per_s, jitter=JITTER, seed=SEED)


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("api-fast", 0.25, 150.0, "a fast hosted API model (small frontier-lab models, Groq/Cerebras-class serving)"),
    Profile("served-mid", 0.3, 50.0, "a mid-size open model served by vLLM or TGI on one GPU"),
    Profile("local-slow", 1.0, 15.0, "a 7-8B model on a laptop CPU or a busy shared GPU (llama.cpp, Ollama)"),
)}
