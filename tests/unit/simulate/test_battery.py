"""The battery model: energy balance, limits, reserve, efficiency."""

from __future__ import annotations

import random

import pytest

from neighbourgrid.simulate.battery import Battery, BatterySpec

SPEC = BatterySpec(capacity_wh=10_000, max_charge_w=4_000, max_discharge_w=3_000)


def test_energy_balance_holds_exactly_over_random_cycles() -> None:
    rng = random.Random(1)
    battery = Battery.at_soc(SPEC, 5_000)
    for _ in range(2_000):
        if rng.random() < 0.5:
            battery.charge(rng.randrange(0, 2_000), seconds=900)
        else:
            battery.discharge(rng.randrange(0, 2_000), seconds=900)
        assert battery.stored_wh - battery.initial_wh == (
            battery.charged_wh - battery.discharged_wh - battery.losses_wh
        )
        assert battery.losses_wh >= 0
        assert SPEC.reserve_wh <= battery.stored_wh <= SPEC.capacity_wh or (
            battery.stored_wh == battery.initial_wh
        )


def test_discharge_never_goes_below_the_reserve() -> None:
    battery = Battery.at_soc(SPEC, 2_500)
    delivered = sum(battery.discharge(10_000, seconds=3_600) for _ in range(5))
    assert battery.stored_wh >= 2_000
    assert battery.soc_bp == 2_000
    assert delivered == (2_500 - 2_000) * SPEC.one_way_bp // 10_000
    assert battery.discharge(1, seconds=3_600) == 0


def test_power_limits_cap_energy_per_period_and_are_shared() -> None:
    battery = Battery.at_soc(SPEC, 5_000)
    assert battery.discharge(5_000, seconds=900) == 750  # 3000 W for 15 minutes
    battery2 = Battery.at_soc(SPEC, 5_000)
    first = battery2.discharge(500, seconds=900)
    second = battery2.discharge(5_000, seconds=900, used_wh=first)
    assert first + second == 750
    battery3 = Battery.at_soc(SPEC, 2_000)
    assert battery3.charge(5_000, seconds=900) == 1_000  # 4000 W for 15 minutes


def test_round_trip_efficiency_is_the_configured_one() -> None:
    battery = Battery.at_soc(SPEC, 2_000)
    taken = 0
    while (step := battery.charge(10_000, seconds=3_600)) > 0:
        taken += step
    assert battery.stored_wh <= SPEC.capacity_wh
    returned = 0
    while (step := battery.discharge(10_000, seconds=3_600)) > 0:
        returned += step
    assert abs(returned / taken - 0.9) < 0.002


def test_full_battery_takes_nothing() -> None:
    battery = Battery(spec=SPEC, stored_wh=10_000)
    assert battery.charge(1_000, seconds=900) == 0
    assert battery.soc_bp == 10_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity_wh": 0, "max_charge_w": 1, "max_discharge_w": 1},
        {"capacity_wh": 1000, "max_charge_w": -1, "max_discharge_w": 1},
        {"capacity_wh": 1000, "max_charge_w": 1, "max_discharge_w": 1, "round_trip_bp": 0},
        {"capacity_wh": 1000, "max_charge_w": 1, "max_discharge_w": 1, "reserve_bp": 10_000},
        {"capacity_wh": 1000.0, "max_charge_w": 1, "max_discharge_w": 1},
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BatterySpec(**kwargs)  # type: ignore[arg-type]


def test_bad_initial_state_is_refused() -> None:
    with pytest.raises(ValueError):
        Battery(spec=SPEC, stored_wh=10_001)
