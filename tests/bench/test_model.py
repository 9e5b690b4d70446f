"""The closed-form latency model on small inputs, checked against a brute-force schedule."""

from __future__ import annotations

import random

import pytest

from eager.bench.model import Regime, Unit, finish_times, ideal_end, predict, regime, token_time


def simulate(units: list[Unit], step: float = 0.001) -> float:
    """An interpreter ticking through time: picks the next unit once it is both free and the unit is ready."""
    now, index, busy_until = 0.0, 0, 0.0
    while index < len(units):
        if now >= busy_until and now >= units[index].ready_s - 1e-12:
            busy_until = now + units[index].exec_s
            index += 1
        else:
            now = round(now + step, 9)
    return busy_until


def test_a_unit_waits_for_its_readiness_and_for_the_one_before() -> None:
    units = [Unit(1.0, 0.5), Unit(1.2, 0.1), Unit(3.0, 0.2)]
    assert finish_times(units) == pytest.approx([1.5, 1.6, 3.2])
    assert ideal_end(units) == pytest.approx(3.2)
    assert ideal_end([]) == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_the_recurrence_matches_a_schedule_simulated_tick_by_tick(seed: int) -> None:
    rng = random.Random(seed)
    ready = sorted(round(rng.uniform(0, 2), 3) for _ in range(rng.randint(1, 8)))
    units = [Unit(r, round(rng.uniform(0, 0.6), 3)) for r in ready]
    assert ideal_end(units) == pytest.approx(simulate(units), abs=0.002)


def test_the_regime_says_whether_a_backlog_meets_the_last_unit() -> None:
    assert regime([Unit(1.0, 0.1), Unit(2.0, 0.1)]) is Regime.GENERATION
    assert regime([Unit(1.0, 1.5), Unit(2.0, 0.1)]) is Regime.EXECUTION
    assert regime([Unit(1.0, 9.0)]) is Regime.GENERATION  # one unit hides nothing and owes nothing


def test_token_times_follow_the_first_token_and_the_rate() -> None:
    assert token_time(0.3, 50.0, 1) == pytest.approx(0.3)
    assert token_time(0.3, 50.0, 51) == pytest.approx(1.3)
    with pytest.raises(ValueError):
        token_time(0.3, 50.0, 0)


def test_generation_dominated_eager_pays_only_the_last_unit() -> None:
    # 200 tokens at 50/s after 0.5 s; units proven at tokens 50, 100, 150, 200, 10 ms each
    prediction = predict(0.5, 50.0, [50, 100, 150, 200], 200, [0.01] * 4)
    assert prediction.generation_s == pytest.approx(0.5 + 199 / 50)
    assert prediction.serial_s == pytest.approx(prediction.generation_s + 0.04)
    assert prediction.eager_s == pytest.approx(prediction.generation_s + 0.01)
    assert prediction.serial_non_overlapped_s == pytest.approx(0.04)
    assert prediction.eager_non_overlapped_s == pytest.approx(0.01)
    assert prediction.regime is Regime.GENERATION


def test_execution_dominated_eager_still_saves_the_generation_it_overlaps() -> None:
    prediction = predict(0.1, 100.0, [10, 20, 30], 31, [1.0, 1.0, 1.0])
    first_ready = 0.1 + 9 / 100
    assert prediction.eager_s == pytest.approx(first_ready + 3.0)
    assert prediction.serial_s == pytest.approx(0.1 + 30 / 100 + 3.0)
    assert prediction.regime is Regime.EXECUTION
    assert 0 < prediction.reduction < 1


def test_prose_after_the_code_lets_eager_finish_before_generation_ends() -> None:
    prediction = predict(0.2, 20.0, [40], 100, [0.1])
    assert prediction.eager_s < prediction.generation_s
    assert prediction.eager_non_overlapped_s == 0.0


def test_a_fixed_overhead_is_paid_by_both() -> None:
    plain, loaded = predict(0.2, 20.0, [40], 50, [0.1]), predict(0.2, 20.0, [40], 50, [0.1], overhead_s=0.05)
    assert loaded.serial_s - plain.serial_s == pytest.approx(0.05)
    assert loaded.eager_s - plain.eager_s == pytest.approx(0.05)


@pytest.mark.parametrize(("proof", "total", "exec_s"), [
    ([10, 20], 30, [0.1]),  # one time too few
    ([0], 30, [0.1]),  # tokens count from 1
    ([31], 30, [0.1]),  # past the answer
    ([20, 10], 30, [0.1, 0.1]),  # out of order
])
def test_inconsistent_inputs_are_refused(proof: list[int], total: int, exec_s: list[float]) -> None:
    with pytest.raises(ValueError):
        predict(0.1, 10.0, proof, total, exec_s)
