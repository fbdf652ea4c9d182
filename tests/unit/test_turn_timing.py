"""Samples timed to a camera's detector turn: the turn's forecast and the sample's time."""

from __future__ import annotations

import math

import pytest

from traffic.turn_timing import LEAD_JITTERS, LEAD_PACE, MIN_TURN_GAIN, TurnForecast, forecast, turn_sample_time


def test_a_turn_is_due_one_pace_per_turn_ahead_after_the_last_turn() -> None:
    turn = forecast(ticket=10, count=7, last_take=100.0, pace=0.2, jitter=0.0)
    assert turn == TurnForecast(ahead=3, last_take=100.0, pace=0.2, jitter=0.0)
    assert turn.due(now=100.05) == pytest.approx(100.6)
    # The turn being served overran its pace: the next one starts no earlier than now.
    assert turn.due(now=100.5) == pytest.approx(100.9)


def test_a_reached_ticket_is_the_next_turn_and_bad_figures_are_clamped() -> None:
    assert forecast(ticket=7, count=9, last_take=100.0, pace=-1.0, jitter=-1.0) == TurnForecast(1, 100.0, 0.0, 0.0)


def test_the_sample_leads_the_turn_by_its_submit_time_and_a_margin_growing_with_the_turns_ahead() -> None:
    near = TurnForecast(ahead=1, last_take=100.0, pace=0.2, jitter=0.02)
    far = TurnForecast(ahead=4, last_take=100.0, pace=0.2, jitter=0.02)
    assert near.sample_at(100.0, submit_s=0.01) == pytest.approx(100.2 - 0.01 - LEAD_JITTERS * 0.02)
    assert far.sample_at(100.0, submit_s=0.01) == pytest.approx(100.8 - 0.01 - LEAD_JITTERS * 0.02 * math.sqrt(4))


def test_a_turn_beyond_one_interval_or_too_close_to_the_last_sample_leaves_the_regular_schedule() -> None:
    assert turn_sample_time(100.0, 2.0, 101.5) == 101.5
    assert turn_sample_time(100.0, 2.0, 102.0) == 102.0  # no gap over one interval
    assert turn_sample_time(100.0, 2.0, 102.01) is None  # the regular sample comes first
    assert turn_sample_time(100.0, 2.0, 99.0) is None  # the last sample is the freshest the turn can get
    assert turn_sample_time(100.0, 2.0, 100.0 + MIN_TURN_GAIN * 2.0 - 0.01) is None  # gains too little


def test_the_margin_is_at_least_a_share_of_the_pace() -> None:
    steady = TurnForecast(ahead=1, last_take=100.0, pace=0.5, jitter=0.0)  # no miss seen yet
    assert steady.sample_at(100.0, submit_s=0.0) == pytest.approx(100.5 - LEAD_PACE * 0.5)


def test_a_batched_detector_takes_turns_a_batch_at_a_time() -> None:
    # Batches of four, 0.1 s a turn: 0.4 s a batch. Five turns ahead: this one is in the second batch.
    turn = forecast(ticket=15, count=10, last_take=100.0, pace=0.1, jitter=0.0, batch=4)
    assert turn.ahead == 5 and turn.batch == 4
    assert turn.due(now=100.1) == pytest.approx(100.8)
    assert forecast(ticket=15, count=10, last_take=100.0, pace=0.1, jitter=0.0, batch=0).batch == 1
