"""When to sample a camera under overload: just before its queued detector turn, not on a fixed phase.

Under overload each camera keeps one detector turn queued, and the detector takes the queued turns in
order at a steady pace, whatever the phase of the cameras' sampling. A frame sampled on the regular
schedule therefore waits a random part of the sampling interval before its turn takes it. The queue
keeps a turn clock (how many turns were taken, when the last was, the smoothed time between turns and its
smoothed miss) and each queued turn a ticket (the clock's count when it will be taken), so the capture
service can tell when a camera's turn is due and sample just before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEAD_JITTERS = 2.5
"""A sample timed to a turn is taken this many of the pace's jitter early (times √turns ahead)…"""
LEAD_PACE = 0.2
"""…and at least this share of the pace early (a turn's time has a longer tail than its mean miss)."""
MIN_TURN_GAIN = 0.1
"""A sample is timed to a turn only when that makes the turn's frame fresher by this share of the interval."""


@dataclass(frozen=True)
class TurnForecast:
    """How far a camera's queued detector turn is: ``ahead`` turns to take first (its own included), the
    last turn's time ``last_take`` (epoch s), the smoothed seconds per turn and their smoothed miss, and
    how many turns were taken together then (``batch``: a batched detector takes several at once)."""

    ahead: int
    last_take: float
    pace: float
    jitter: float
    batch: int = 1

    def due(self, now: float) -> float:
        """When the turn is likely taken (epoch s): the batch being served ends ``batch`` paces after it
        began, or now if it overran; then ``batch`` paces per batch until the one holding this turn."""
        batch_s = self.batch * self.pace
        batches = math.ceil(self.ahead / self.batch)
        return max(self.last_take + batch_s, now) + (batches - 1) * batch_s

    def sample_at(self, now: float, submit_s: float) -> float:
        """When to sample for the turn (epoch s): before it by ``submit_s`` (a sample's encode and store) plus
        a margin for its miss, which grows with the turns ahead."""
        margin = max(LEAD_JITTERS * self.jitter * math.sqrt(self.ahead), LEAD_PACE * self.pace)
        return self.due(now) - submit_s - margin


def forecast(ticket: int, count: int, last_take: float, pace: float, jitter: float, batch: int = 1) -> TurnForecast:
    """The forecast of a turn with ``ticket`` when the queue's clock reads ``count`` turns taken (a ticket
    already reached means the turn is the next, late)."""
    return TurnForecast(max(1, ticket - count), last_take, max(pace, 0.0), max(jitter, 0.0), max(batch, 1))


def turn_sample_time(last_sample: float, interval: float, turn_at: float) -> float | None:
    """The next sample's time when a turn wants its sample at ``turn_at``: ``turn_at`` itself, or None (the
    regular schedule) when that is more than one interval after the last sample, or too soon after it to
    make the turn's frame fresher by ``MIN_TURN_GAIN`` of the interval."""
    if turn_at - last_sample < MIN_TURN_GAIN * interval or turn_at > last_sample + interval:
        return None
    return turn_at
