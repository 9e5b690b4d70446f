"""smolagents' CodeAgent with its steps run by Eager (needs the `smolagents` extra: pip install -e '.[smolagents]').

    python -m eager.examples.smolagents_agent                # a replayed model scripts the agent's two steps
    python -m eager.examples.smolagents_agent --live "TASK"  # the configured model, else the local one

Each step's code runs while the model is still writing it, in one sandboxed interpreter that lives across the
agent's steps: the scripted step 2 answers from the names step 1 defined. A table of what each step cost follows.
Stages, and Redis if none answers, start for the run as `eager run` starts them.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from eager.common.config import Settings
from eager import local_model
from eager.replay import SpeedProfile
from eager.replay_stack import replay_model
from eager.smolagents_adapter import eager_code_agent
from eager.stack import LocalStack

SCRIPTED_TASK = "Below 600 000, which prime starts the longest gap to the next prime, and how long is that gap?"
SCRIPTED_STEPS = [
    '''Thought: I will list the primes first and keep them, so that the next step can use them.
```python
import math


def is_prime(n):
    if n < 2:
        return False
    for d in range(2, math.isqrt(n) + 1):
        if n % d == 0:
            return False
    return True


primes = [n for n in range(600_000) if is_prime(n)]
print(len(primes), "primes below 600 000, the largest", primes[-1])
gaps = {a: b - a for a, b in zip(primes, primes[1:])}
longest = max(gaps, key=gaps.get)
print("the longest gap starts at", longest)
```
''',
    '''Thought: `gaps` and `longest` are still defined, so I can answer at once.
```python
final_answer({"prime": longest, "gap": gaps[longest]})
```
''',
]
LIVE_TASK = "What is the sum of the squares of the first ten prime numbers?"


@contextlib.contextmanager
def scripted(settings: Settings) -> Iterator[Settings]:
    """A replay model serving the scripted steps (the k-th call gets step k), and a namespace of this run's own."""
    with replay_model(settings, {"scripted": SCRIPTED_STEPS}, SpeedProfile(ttft_s=0.3, tokens_per_s=60.0),
                      model="scripted", label="smolagents") as configured:
        yield configured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", help=f"with --live (default: {LIVE_TASK!r})")
    parser.add_argument("--live", action="store_true", help="ask a real model instead of the scripted replay")
    args = parser.parse_args(argv)
    configured = Settings.from_env()
    with contextlib.ExitStack() as stack:
        # live: the configured endpoint, else the local model (EAGER_LOCAL_MODEL: Qwen2.5-Coder-1.5B by default)
        settings = stack.enter_context(local_model.unless_configured(configured) if args.live
                                       else scripted(configured))
        private = settings.namespace != configured.namespace  # this run's alone: its keys go when it ends
        settings = stack.enter_context(LocalStack(settings, forget=private))
        agent = stack.enter_context(eager_code_agent(settings, max_steps=4 if args.live else 2))
        answer = agent.run((args.task or LIVE_TASK) if args.live else SCRIPTED_TASK)
        print(f"\nanswer: {answer!r}\n")
        print(f"{'step':<6}{'status':<18}{'generation':>12}{'execution':>12}{'after generation':>18}")
        for number, session in enumerate(agent.model.sessions, 1):
            summary = session.result()
            print(f"{number:<6}{summary.status:<18}{summary.generation_s or 0:>11.2f}s{summary.execution_busy_s:>11.2f}s"
                  f"{summary.non_overlapped_s or 0:>17.2f}s")


if __name__ == "__main__":
    main()
