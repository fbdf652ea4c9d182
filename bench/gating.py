"""Gating: a simulated camera fleet run through ``traffic.gate.decide``; calls, escalations caught, peak rate.

Pure and fast: no processes. Each camera is sampled every ``capture.frame_interval_s`` (1.8 s) on its
own phase; its scene is a set of scripted group *tracks* built from real ``Detection`` boxes and
grouped by ``traffic.grouping.find_groups``:

- queued groups (vehicles at a light, a stalled car): stay put for 36 s to 5 min;
- slow groups: drift up to 30 px per tick for 15-70 s, staying on screen;
- passing groups: cross the picture at 120-300 px per tick and are gone after 1-3 ticks;
- every box jitters by a normal 2 px per edge each tick, each member is missed by the detector on 3 %
  of ticks, and queued/slow groups gain or lose a member on 1 % of ticks;
- members of queued/slow groups also move relative to each other: on 2 % of ticks one member steps
  0.3-0.7 of its box height in a random direction and stays there (a car creeping up in the queue, a
  pedestrian shuffling on the kerb) with the risk unchanged;
- scripted escalations: 30 % of queued and slow groups that live long enough get their true risk
  raised to medium/high for 3-20 ticks, half "in place" (same members, same coarse position) and half
  "with change" (a member joins as the risk rises: e.g. a motorcycle cutting in). Three in four
  in-place ones *move*: on the rise one member (a person, bicycle or motorcycle if the group has one)
  steps towards the nearest other member, preferably a car, truck or bus, by the same 0.3-0.7 box
  heights as the risk-free steps (at most 60 % of the centre distance; a step under twice the jitter,
  lost in it, counts as still), and steps back when the risk falls: a pedestrian stepping off the kerb
  in front of a queued car. The other in-place ones are
  *still*: nothing a detector reports changes (a light turning red, a driver on the phone).

``--no-motion`` drops both kinds of relative movement and gives exactly the scenes of the simulator
before they were added (every in-place escalation still); the extra draws come from a second random
stream, so the rest of every scene is the same either way.

Each tick runs ``decide`` exactly as ``workers/detection.py`` calls it when a paid model is
configured (cooldown, budget per wall-clock minute, unchanged-scene reuse, ``max_groups``), with the
production defaults from ``traffic.settings``. A fake model answers every call with the group's true
risk at that tick; its verdicts become reusable when the frame is final (``--llm-latency`` later),
as ``workers.finalize.remember_assessed`` stores them. The first minute is a warm-up (empty caches,
every group new) and is not counted.

    python -m bench.gating [--quick] [--minutes M] [--cameras N] [--seed S] [--no-motion]
                           [--dedupe-window S] [--recheck S] [--distance-tolerance T]

``--distance-tolerance 1e9 --recheck 30`` is the gate before member spacing and re-checks (classes and
grid box only), to the call; ``--dedupe-window 0`` is no reuse at all.

Members carry track ids and groups their keys, as with tracking on (``--no-tracks``: without, the gate
keys groups by classes and grid box). Escalations are split by what a detector sees: *visible* ones
(a member joins, or steps closer) must never be missed; *invisible* ones (``still``) can only be caught
by the re-check, so they count as missed when not sent within ``recheck_s`` (plus a tick and the
cooldown) among those lasting longer than that.

Last line: ``calls=… naive_calls=… missed_escalations=… peak_rpm=… missed_visible=… missed_invisible=…``
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.common import finish, percentile
from traffic.gate import GateDecision, RecentVerdict, decide, group_signature
from traffic.grouping import find_groups
from traffic.models import Detection, GroupContext, GroupVerdict, RiskLevel, VerdictStatus
from traffic.settings import CaptureSettings, GroupingSettings, LLMSettings, PipelineSettings
from traffic.tracking import keyed_groups

WIDTH, HEIGHT = 1280, 720
EPOCH = 1_700_000_040.0
"""Simulated start: on a wall-clock minute boundary, like the budget's minute buckets."""
WARM_UP_S = 60.0
JITTER_PX = 2.0
SEEN_STEP_PX = 2 * JITTER_PX
"""An escalation's step shorter than this (pixels) shows in nothing a detector reports: it counts as still."""
MISS_PROB = 0.03
MEMBER_CHANGE_PROB = 0.01
ESCALATION_PROB = 0.3
STEP_PROB = 0.02
"""Per queued/slow group and tick: one member steps relative to the others, risk unchanged."""
STEP_REACH = (0.3, 0.7)
"""A step's length in heights of the member's box (risk-free steps and in-place escalations alike)."""
STILL_PROB = 0.25
"""Share of in-place escalations in which no member moves."""
MOTION_SALT = 0x5EED_0F_3073
"""Seeds the relative-movement stream of a camera from its scene seed."""
VULNERABLE = ("person", "bicycle", "motorcycle")
VEHICLES = ("car", "car", "car", "car", "truck", "bus", "motorcycle", "bicycle", "person", "person")


@dataclass(frozen=True)
class Policy:
    """The gate's settings (production defaults unless overridden)."""

    tick_s: float = CaptureSettings().frame_interval_s
    cooldown_s: float = LLMSettings().cooldown_s
    dedupe_window_s: float = PipelineSettings().dedupe_window_s
    recheck_s: float = PipelineSettings().dedupe_recheck_s
    distance_tolerance: float = PipelineSettings().dedupe_distance_tolerance
    budget_per_minute: int = PipelineSettings().budget_per_minute
    max_groups: int = GroupingSettings().max_groups
    llm_latency_s: float = 1.5
    tracked: bool = True
    """Members carry track ids and groups their keys (tracking on, the default): the gate keys a group by
    its tracks, so it keeps its verdict as it moves and is asked again when a track joins or leaves."""
    unserved: bool = True
    """Changes that got no call (cooldown, budget) keep older verdicts of their tracks from being reused."""


@dataclass(frozen=True)
class Escalation:
    """True risk of a track rises to ``level`` on tick ``tick`` and falls back on tick ``until``."""

    tick: int
    until: int
    level: RiskLevel
    manner: str
    """``in_place`` or ``with_change``."""
    still: bool = False
    """In place with no member moving: nothing the detector reports changes."""


Box = tuple[float, float, float, float]
Member = tuple[str, Box]


@dataclass(frozen=True)
class Step:
    """One member moves relative to the others on one tick (drawn when the track is made)."""

    reach: float
    """Length in heights of the member's box."""
    pick: float = 0.0
    """Which member of a risk-free step: ``int(pick * len(members))``."""
    angle: float | None = None
    """Direction of a risk-free step; None for an escalation's step towards the nearest member."""


@dataclass(frozen=True)
class Outcome:
    """What became of one scripted escalation."""

    manner: str
    still: bool
    delay: int | None
    """Ticks from the rise to the first call for the group while escalated; None if there was none."""
    window: tuple[str, ...]
    """The group's fate on ticks e .. e + window (assessed, reused, cooldown, budget, not visible)."""
    length: int = 0
    """Ticks the risk stays raised."""

    @property
    def missed(self) -> bool:
        """Not sent to the model within the window."""
        return self.delay is None or self.delay >= len(self.window)

    @property
    def cause(self) -> str:
        """Why a missed escalation was missed: the first of these outcomes found in its window."""
        return next((c for c in ("reused", "budget", "cooldown") if c in self.window), "not visible")


@dataclass
class Track:
    """One scripted group on one camera, alive on ticks ``start`` .. ``end - 1``."""

    kind: str
    start: int
    end: int
    members: list[Member]
    velocity: tuple[float, float]
    base: RiskLevel
    escalation: Escalation | None = None
    changes: dict[int, str] = field(default_factory=dict)
    steps: dict[int, Step] = field(default_factory=dict)
    stepped: tuple[int, float, float] | None = None
    """The escalation's step (member, dx, dy) while it lasts, taken back when the risk falls."""
    serials: list[int] = field(default_factory=list)
    """Each member's serial within the track (its track id once numbered), in ``members`` order."""

    def __post_init__(self) -> None:
        self.serials = list(range(len(self.members)))

    def risk(self, tick: int) -> RiskLevel:
        """True risk on ``tick``."""
        e = self.escalation
        return e.level if e is not None and e.tick <= tick < e.until else self.base


def _pick(rng: random.Random, weights: dict[RiskLevel, float]) -> RiskLevel:
    return rng.choices(list(weights), list(weights.values()))[0]


def _new_member(rng: random.Random, near: tuple[float, float] | None, cls: str | None = None) -> Member:
    """A class and box; centred within 90 px of ``near`` so that members always link into one group."""
    cls = cls or rng.choice(VEHICLES)
    w, h = (rng.uniform(30, 60), rng.uniform(70, 140)) if cls in ("person", "bicycle") else (
        rng.uniform(80, 220), rng.uniform(60, 150))  # fmt: skip
    if near is None:
        cx, cy = rng.uniform(150, WIDTH - 150), rng.uniform(250, HEIGHT - 100)
    else:
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(40, 90)
        cx, cy = near[0] + dist * math.cos(angle), near[1] + dist * math.sin(angle)
    return cls, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def make_track(rng: random.Random, kind: str, start: int, motion: random.Random | None = None) -> Track:
    """A scripted group of ``kind`` appearing on tick ``start``; ``motion`` draws relative movement (None: none)."""
    first = _new_member(rng, None)
    members = [first] + [_new_member(rng, _centre(first[1])) for _ in range(rng.choice((1, 1, 2, 2, 3)))]
    if kind == "queued":
        life, velocity = rng.randint(20, 170), (0.0, 0.0)
        base = _pick(rng, {RiskLevel.NONE: 0.6, RiskLevel.LOW: 0.4})
    elif kind == "slow":
        # Towards the farther side, slow enough to stay on screen for its whole life.
        life, (cx, _) = rng.randint(8, 40), _centre(first[1])
        room = max(cx, WIDTH - cx) - 80
        speed = min(rng.uniform(6, 30), room / life)
        velocity = (speed if cx < WIDTH / 2 else -speed, rng.uniform(-2, 2))
        base = _pick(rng, {RiskLevel.NONE: 0.5, RiskLevel.LOW: 0.4, RiskLevel.MEDIUM: 0.1})
    else:
        life, velocity = rng.randint(1, 3), (rng.choice((-1, 1)) * rng.uniform(120, 300), 0.0)
        base = _pick(rng, {RiskLevel.NONE: 0.5, RiskLevel.LOW: 0.3, RiskLevel.MEDIUM: 0.15, RiskLevel.HIGH: 0.05})
    track = Track(kind, start, start + life, members, velocity, base)
    if kind != "passing":
        for tick in range(start + 1, start + life):
            if rng.random() < MEMBER_CHANGE_PROB:
                track.changes[tick] = rng.choice(("join", "leave"))
        if life >= 8 and rng.random() < ESCALATION_PROB:
            tick = rng.randint(start + 3, start + life - 4)
            higher = [level for level in (RiskLevel.MEDIUM, RiskLevel.HIGH) if level.rank > base.rank]
            level = rng.choices(higher, [0.7, 0.3][-len(higher) :])[0]
            manner = rng.choice(("in_place", "with_change"))
            track.escalation = Escalation(tick, min(start + life, tick + rng.randint(3, 20)), level, manner)
            if manner == "with_change":
                track.changes[tick] = "join"
            else:
                track.changes.pop(tick, None)  # in place means no member change on that tick
        if motion is not None:
            _add_steps(motion, track)
        elif track.escalation is not None and track.escalation.manner == "in_place":
            track.escalation = dataclasses.replace(track.escalation, still=True)
    return track


def _add_steps(motion: random.Random, track: Track) -> None:
    """Script the track's relative movement: risk-free steps, and the step of an in-place escalation."""
    for tick in range(track.start + 1, track.end):
        if motion.random() < STEP_PROB:
            track.steps[tick] = Step(motion.uniform(*STEP_REACH), motion.random(), motion.uniform(0, 2 * math.pi))
    e = track.escalation
    if e is not None and e.manner == "in_place":
        if motion.random() < STILL_PROB:
            track.escalation = dataclasses.replace(e, still=True)
        else:
            track.steps[e.tick] = Step(motion.uniform(*STEP_REACH))


def _step(track: Track, tick: int) -> None:
    """Apply the track's scripted movement for ``tick`` to its members (it persists)."""
    e, step = track.escalation, track.steps.pop(tick, None)
    if e is not None and tick == e.until and track.stepped is not None:
        index, dx, dy = track.stepped
        track.stepped = None
        if index < len(track.members):
            _move(track, index, -dx, -dy)
    if step is None:
        return
    if step.angle is not None:
        index = int(step.pick * len(track.members))
        reach = step.reach * _height(track.members[index][1])
        _move(track, index, reach * math.cos(step.angle), reach * math.sin(step.angle))
        return
    vulnerable = [i for i, (cls, _) in enumerate(track.members) if cls in VULNERABLE]
    index = vulnerable[0] if vulnerable else len(track.members) - 1
    here = _centre(track.members[index][1])
    others = [i for i in range(len(track.members)) if i != index]
    vehicles = [i for i in others if track.members[i][0] not in VULNERABLE] or others
    target = min(vehicles, key=lambda i: math.dist(here, _centre(track.members[i][1])))
    there = _centre(track.members[target][1])
    gap = math.dist(here, there)
    if gap <= 0:
        return
    reach = min(step.reach * _height(track.members[index][1]), 0.6 * gap)
    dx, dy = (there[0] - here[0]) / gap * reach, (there[1] - here[1]) / gap * reach
    _move(track, index, dx, dy)
    track.stepped = (index, dx, dy)
    if e is not None and reach < SEEN_STEP_PX:
        # Already on top of the vehicle: a step this short is lost in the boxes' jitter, so no detector
        # sees it and only the re-check can catch the escalation.
        track.escalation = dataclasses.replace(e, still=True)


def _height(box: Box) -> float:
    return box[3] - box[1]


def _move(track: Track, index: int, dx: float, dy: float) -> None:
    cls, (x1, y1, x2, y2) = track.members[index]
    track.members[index] = (cls, (x1 + dx, y1 + dy, x2 + dx, y2 + dy))


def make_scene(rng: random.Random, ticks: int, motion: random.Random | None = None) -> list[Track]:
    """Every track of one camera over ``ticks`` ticks (some already on screen at tick 0)."""
    tracks: list[Track] = []
    for kind, slots in (("queued", rng.choice((0, 1, 1, 2, 2, 3))), ("slow", rng.choice((0, 1, 1, 2)))):
        for _ in range(slots):
            tick = -rng.randint(0, 60)
            while tick < ticks:
                track = make_track(rng, kind, tick, motion)
                tracks.append(track)
                tick = track.end + rng.randint(0, 10)
    rate = rng.uniform(0.05, 0.4)
    tracks += [make_track(rng, "passing", t) for t in range(ticks) if rng.random() < rate]
    return tracks


def _frame_detections(rng: random.Random, track: Track, tick: int) -> list[Detection]:
    """The track's members as the detector reports them on ``tick``: moved, jittered, some missed."""
    if tick in track.changes:
        if track.changes[tick] == "join":
            anchor = _centre(track.members[0][1])
            escalating = track.escalation is not None and track.escalation.tick == tick
            track.members.append(_new_member(rng, anchor, "motorcycle" if escalating else None))
            track.serials.append(max(track.serials, default=-1) + 1)
        elif len(track.members) > 2:
            track.members.pop()
            track.serials.pop()
        del track.changes[tick]  # applied once; members persist
    _step(track, tick)
    dx, dy = (v * (tick - track.start) for v in track.velocity)
    found = []
    for serial, (cls, (x1, y1, x2, y2)) in zip(track.serials, track.members, strict=True):
        if rng.random() < MISS_PROB:
            continue
        box = [x1 + dx, y1 + dy, x2 + dx, y2 + dy]
        box = [c + rng.gauss(0.0, JITTER_PX) for c in box]
        x1, y1, x2, y2 = max(0.0, box[0]), max(0.0, box[1]), min(WIDTH, box[2]), min(HEIGHT, box[3])
        if x2 - x1 > 4 and y2 - y1 > 4:
            found.append(Detection(cls, 0.8, (x1, y1, x2, y2), serial))
    return found


@dataclass
class Tally:
    """What the run counted (after warm-up)."""

    calls: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    cooldown_only: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    stale: Counter[str] = field(default_factory=Counter)
    escalations: list[Outcome] = field(default_factory=list)
    groups_per_frame: list[int] = field(default_factory=list)
    per_camera_peak: list[int] = field(default_factory=list)
    tracks: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Span:
    """How long a run lasts in ticks: all of them, the uncounted warm-up, and an escalation's window."""

    ticks: int
    warm_ticks: int
    window_ticks: int


@dataclass
class CameraState:
    """One camera's gate state and history while its scene runs."""

    recent: dict[str, RecentVerdict] = field(default_factory=dict)
    unserved: dict[str, float] = field(default_factory=dict)
    """Scene key of a tracked group that needed a call and got none → when (as workers/detection.py keeps)."""
    landing: list[tuple[float, float, str, GroupVerdict]] = field(default_factory=list)
    """Verdicts called but not yet final: (reusable from, time of the frame judged, signature, verdict), in
    call order."""
    cooldown_until: float = -math.inf
    naive_cooldown_until: float = -math.inf
    """The cooldown-only baseline's own cooldown."""
    budget: Counter[int] = field(default_factory=Counter)
    """Calls per wall-clock minute (``int(now // 60)``)."""
    assessed: dict[int, list[int]] = field(default_factory=dict)
    """Track number -> ticks it was sent to the model."""
    seen: dict[int, dict[int, str]] = field(default_factory=dict)
    """Track number -> tick -> outcome."""
    calls: list[float] = field(default_factory=list)
    """Times of the counted calls."""


Frame = list[tuple[int, GroupContext]]
"""One tick's visible groups: (track number, group context), numbered from 1 in track order."""

ESCALATION_KINDS: dict[str, Callable[[Outcome], bool]] = {
    "in_place": lambda e: e.manner == "in_place",
    "  moving": lambda e: e.manner == "in_place" and not e.still,
    "  still": lambda e: e.manner == "in_place" and e.still,
    "with_change": lambda e: e.manner == "with_change",
}
"""The escalation breakdown's rows, in print order."""


def simulate_camera(
    rng: random.Random,
    motion: random.Random | None,
    policy: Policy,
    ticks: int,
    warm_ticks: int,
    window_ticks: int,
    tally: Tally,
) -> None:
    """Run one camera's scene through the gate; add its figures to ``tally``."""
    origin = EPOCH + rng.uniform(0, policy.tick_s)
    tracks = make_scene(rng, ticks, motion)
    state = CameraState()
    for tick in range(ticks):
        _simulate_tick(rng, policy, tracks, state, tick, origin + tick * policy.tick_s, tick >= warm_ticks, tally)
    tally.calls += state.calls
    tally.per_camera_peak.append(peak_per_minute(state.calls))
    _tally_tracks(tracks, state, Span(ticks, warm_ticks, window_ticks), tally)


def _simulate_tick(
    rng: random.Random,
    policy: Policy,
    tracks: list[Track],
    state: CameraState,
    tick: int,
    now: float,
    counted: bool,
    tally: Tally,
) -> None:
    """One sampled frame: land final verdicts, gate the visible groups, and record what became of them."""
    _land_verdicts(state, now)
    frame = _visible_groups(rng, tracks, tick, state.seen, policy.tracked)
    decision = _gate(policy, state, [context for _, context in frame], now)
    _record_outcomes(policy, state, tracks, frame, decision, tick, now, counted, tally)
    _count_frame(policy, state, len(frame), len(decision.assess), now, counted, tally)


def _land_verdicts(state: CameraState, now: float) -> None:
    """Make the verdicts that are final by ``now`` reusable."""
    while state.landing and state.landing[0][0] <= now:
        _, judged_at, signature, verdict = state.landing.pop(0)
        # Its age counts from the frame the model saw, as workers/finalize.py remembers it.
        state.recent[signature] = RecentVerdict(verdict, judged_at)


def _visible_groups(
    rng: random.Random, tracks: list[Track], tick: int, seen: dict[int, dict[int, str]], tracked: bool = True
) -> Frame:
    """The largest group each live track forms on ``tick``; tracks that form none are marked not visible.

    ``tracked``: members carry track ids (a member's id is its group's number and its serial) and groups
    their keys, as with tracking on; else they carry none.
    """
    frame: Frame = []
    for number, track in enumerate(tracks):
        if not track.start <= tick < track.end:
            continue
        found = [
            dataclasses.replace(
                d, track_id=(number + 1) * 1000 + d.track_id if tracked and d.track_id is not None else None
            )
            for d in _frame_detections(rng, track, tick)
        ]
        groups = find_groups(found, (WIDTH, HEIGHT), GroupingSettings())
        if not groups:
            seen.setdefault(number, {})[tick] = "not visible"
            continue
        group = max(groups, key=lambda g: g.object_count)
        members = tuple(found[i] for i in group.member_indices)
        group = dataclasses.replace(group, index=len(frame) + 1, member_indices=tuple(range(len(members))))
        if tracked:
            (group,) = keyed_groups([group], members, 1)
        frame.append((number, GroupContext(group, members, (WIDTH, HEIGHT))))
    return frame


def _gate(policy: Policy, state: CameraState, contexts: list[GroupContext], now: float) -> GateDecision:
    """Run ``decide`` on one frame and apply its forgetting, cooldown and budget as the worker does."""
    decision = decide(
        contexts,
        now=now,
        cooldown_active=now < state.cooldown_until,
        recent=state.recent,
        budget_left=max(0, policy.budget_per_minute - state.budget[int(now // 60)]),
        max_groups=max(1, policy.max_groups),
        dedupe_window_s=policy.dedupe_window_s,
        recheck_s=policy.recheck_s,
        distance_tolerance=policy.distance_tolerance,
        unserved=state.unserved if policy.unserved else None,
    )
    for signature in decision.forget:
        del state.recent[signature]  # as workers/detection.py forgets them
    for key in decision.forget_unserved:
        del state.unserved[key]
    state.unserved.update(dict.fromkeys(decision.unserved, now))
    if decision.assess:
        if policy.cooldown_s > 0:
            state.cooldown_until = now + policy.cooldown_s
        state.budget[int(now // 60)] += len(decision.assess)
    return decision


def _record_outcomes(
    policy: Policy,
    state: CameraState,
    tracks: list[Track],
    frame: Frame,
    decision: GateDecision,
    tick: int,
    now: float,
    counted: bool,
    tally: Tally,
) -> None:
    """Note each visible group's outcome; answer the assessed ones with their true risk."""
    reused = dict(decision.reuse)
    for number, context in frame:
        index, truth = context.group.index, tracks[number].risk(tick)
        outcome = _outcome(decision, reused, index)
        if outcome == "assessed":
            _call_model(policy, state, number, context, truth, tick, now)
        elif outcome == "reused" and counted:
            tally.stale[_staleness(reused[index].risk_level, truth)] += 1
        state.seen.setdefault(number, {})[tick] = outcome
        if counted:
            tally.outcomes[outcome] += 1


def _outcome(decision: GateDecision, reused: dict[int, GroupVerdict], index: int) -> str:
    """What the gate did with group ``index``: assessed, reused, budget or cooldown."""
    if index in decision.assess:
        return "assessed"
    if index in reused:
        return "reused"
    return "budget" if index in decision.dropped else "cooldown"


def _staleness(given: RiskLevel, truth: RiskLevel) -> str:
    """A reused verdict's level against the group's true one: below, above or equal."""
    return "below" if given.rank < truth.rank else "above" if given.rank > truth.rank else "equal"


def _call_model(
    policy: Policy, state: CameraState, number: int, context: GroupContext, truth: RiskLevel, tick: int, now: float
) -> None:
    """The fake model's call for one group: noted, and its verdict reusable ``llm_latency_s`` later."""
    state.assessed.setdefault(number, []).append(tick)
    verdict = GroupVerdict(
        context.group.index, VerdictStatus.OK, truth, 0.8, model="fake", latency_s=policy.llm_latency_s
    )
    if policy.dedupe_window_s > 0:
        state.landing.append((now + policy.llm_latency_s, now, group_signature(context), verdict))


def _count_frame(
    policy: Policy, state: CameraState, groups: int, calls: int, now: float, counted: bool, tally: Tally
) -> None:
    """Count one frame's calls against the naive and cooldown-only baselines."""
    cooldown_only = groups > 0 and now >= state.naive_cooldown_until
    if cooldown_only:
        state.naive_cooldown_until = now + policy.cooldown_s
    if counted:
        tally.groups_per_frame.append(groups)
        state.calls += [now] * calls
        tally.naive += [now] * groups
        tally.cooldown_only += [now] * (groups if cooldown_only else 0)


def _tally_tracks(tracks: list[Track], state: CameraState, span: Span, tally: Tally) -> None:
    """Count the camera's tracks after warm-up and the outcome of each escalation with a whole window."""
    for number, track in enumerate(tracks):
        if track.end > span.warm_ticks:
            tally.tracks[track.kind] += 1
        e = track.escalation
        if e is None or e.tick < span.warm_ticks or e.tick + span.window_ticks >= span.ticks:
            continue
        tally.escalations.append(_escalation_outcome(e, state, number, span.window_ticks))


def _escalation_outcome(e: Escalation, state: CameraState, number: int, window_ticks: int) -> Outcome:
    """How soon track ``number`` was sent to the model after escalation ``e``, and its fate in the window."""
    calls_after = [t for t in state.assessed.get(number, []) if e.tick <= t < e.until]
    window = tuple(state.seen.get(number, {}).get(t, "not visible") for t in range(e.tick, e.tick + window_ticks + 1))
    return Outcome(e.manner, e.still, calls_after[0] - e.tick if calls_after else None, window, e.until - e.tick)


def peak_per_minute(times: Sequence[float]) -> int:
    """Most calls in any sliding 60-s window."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] - start < 60.0:
            j += 1
        best = max(best, j - i)
    return best


def simulate_fleet(cameras: int, seed: int, policy: Policy, span: Span, motion: bool) -> Tally:
    """Run every camera, each on its own scene seed drawn from ``seed``; return the fleet's tally."""
    tally = Tally()
    rng = random.Random(seed)
    for _ in range(cameras):
        scene = rng.getrandbits(64)
        steps = random.Random(scene ^ MOTION_SALT) if motion else None
        simulate_camera(random.Random(scene), steps, policy, span.ticks, span.warm_ticks, span.window_ticks, tally)
    return tally


def run(
    cameras: int, minutes: float, seed: int, policy: Policy, window_ticks: int, motion: bool = True
) -> dict[str, object]:
    """Simulate, print, and return the closing line's figures."""
    warm_ticks = math.ceil(WARM_UP_S / policy.tick_s)
    span = Span(warm_ticks + math.ceil(minutes * 60 / policy.tick_s), warm_ticks, window_ticks)
    tally = simulate_fleet(cameras, seed, policy, span, motion)
    missed = [e for e in tally.escalations if e.missed]
    counted_ticks = span.ticks - span.warm_ticks
    _print_setup(cameras, minutes, seed, policy, counted_ticks, tally)
    _print_calls(cameras, policy, counted_ticks, tally)
    _print_escalations(policy, window_ticks, tally, missed)
    _print_reuse(policy, tally, missed)
    visible, invisible, short = _by_visibility(policy, tally)
    late = sum(1 for e in invisible if _late(policy, e))
    print(
        f"by what a detector sees: {len(visible)} escalations show in tracks (a member joins or steps closer), "
        f"missed {sum(1 for e in visible if e.missed)}; {len(invisible)} show in nothing a detector sees and last "
        f"at least the {policy.recheck_s:g}-s re-check, not sent within it: {late}"
        f" ({short} invisible ones ended sooner: no re-check can catch those)"
    )
    summary = _summary(tally, missed)
    summary["missed_visible"] = sum(1 for e in visible if e.missed)
    summary["missed_invisible"] = sum(1 for e in invisible if _late(policy, e))
    summary["tracked"] = int(policy.tracked)
    return summary


def _by_visibility(policy: Policy, tally: Tally) -> tuple[list[Outcome], list[Outcome], int]:
    """Escalations that show in tracks; invisible ones lasting at least the re-check; how many invisible
    ones ended sooner."""
    visible = [e for e in tally.escalations if not e.still]
    recheck_ticks = math.ceil(policy.recheck_s / policy.tick_s)
    still = [e for e in tally.escalations if e.still]
    lasting = [e for e in still if e.length > recheck_ticks]
    return visible, lasting, len(still) - len(lasting)


def _late(policy: Policy, e: Outcome) -> bool:
    """Not sent to the model within the re-check interval (plus one tick and the cooldown) of the rise."""
    return e.delay is None or e.delay * policy.tick_s > policy.recheck_s + policy.tick_s + policy.cooldown_s


def _print_setup(cameras: int, minutes: float, seed: int, policy: Policy, counted_ticks: int, tally: Tally) -> None:
    """Print what was simulated: the run, the scenes and the gate's settings."""
    keyed_by = "track ids" if policy.tracked else "classes + 8x8-grid box"
    print(
        f"simulated: {cameras} cameras x {counted_ticks} ticks ({policy.tick_s} s apart, {minutes:g} min) after a "
        f"{WARM_UP_S:.0f}-s warm-up that is not counted; seed {seed}"
    )
    print(
        f"scene: {statistics.fmean(tally.groups_per_frame):.2f} groups per frame on average (max "
        f"{max(tally.groups_per_frame)}); group tracks: {dict(tally.tracks)}; box jitter {JITTER_PX} px, "
        f"detector misses {MISS_PROB:.0%} of members, members join/leave on {MEMBER_CHANGE_PROB:.0%} of ticks"
    )
    print(
        f"gate: cooldown {policy.cooldown_s:g} s per camera, dedupe window {policy.dedupe_window_s:g} s "
        f"({keyed_by} + member spacing within {policy.distance_tolerance:g} box heights; watched "
        f"groups re-checked after {policy.recheck_s:g} s), budget {policy.budget_per_minute}/camera/wall-clock "
        f"minute, max {policy.max_groups} groups per frame; verdicts reusable {policy.llm_latency_s:g} s after the call"
    )


def _print_calls(cameras: int, policy: Policy, counted_ticks: int, tally: Tally) -> None:
    """Print the group-frames' outcomes and the calls of the gate against both baselines."""
    print(
        f"group-frames: {sum(tally.outcomes.values())}; sent to the model {tally.outcomes['assessed']}, reused a "
        f"recent verdict {tally.outcomes['reused']}, waited out the cooldown {tally.outcomes['cooldown']}, dropped "
        f"by budget or max_groups {tally.outcomes['budget']}"
    )
    minutes_total = counted_ticks * policy.tick_s / 60
    print(f"calls: {len(tally.calls)} ({len(tally.calls) / minutes_total / cameras:.1f} per camera per minute)")
    print(
        f"naive_calls: {len(tally.naive)} = one call per group per sampled frame: every group of every frame "
        f"of every camera, with no cooldown, dedupe, budget or max_groups cap"
    )
    print(
        f"cooldown_only_calls: {len(tally.cooldown_only)} = every group of a frame whenever the camera's "
        f"{policy.cooldown_s:g}-s cooldown has passed, nothing else (the old system's llm.cooldown_seconds alone)"
    )
    print(
        f"peak calls in any sliding 60-s window, all cameras: gate {peak_per_minute(tally.calls)}, naive "
        f"{peak_per_minute(tally.naive)}, cooldown-only {peak_per_minute(tally.cooldown_only)}; one camera at most "
        f"{max(tally.per_camera_peak)} (the budget counts wall-clock minutes, so a sliding minute can hold up to 2x)"
    )


def _print_escalations(policy: Policy, window_ticks: int, tally: Tally, missed: list[Outcome]) -> None:
    """Print the escalations: how many were missed, per kind how fast they were called, the missed ones' fate."""
    print(
        f"escalations: {len(tally.escalations)} (true risk rises to medium/high on tick e while the group stays "
        f"on screen); missed = not sent to the model on ticks e..e+{window_ticks} (within "
        f"{window_ticks * policy.tick_s:.1f} s): {len(missed)}"
    )
    for name, test in ESCALATION_KINDS.items():
        group = [e for e in tally.escalations if test(e)]
        delays = [e.delay * policy.tick_s for e in group if e.delay is not None]
        print(
            f"  {name}: {len(group)}, missed {sum(1 for e in group if e.missed)}, never sent while escalated "
            f"{sum(1 for e in group if e.delay is None)}; rise -> first call p50={percentile(delays, 50):.1f}s "
            f"p95={percentile(delays, 95):.1f}s max={max(delays, default=math.nan):.1f}s"
        )
    window_outcomes = Counter(outcome for e in missed for outcome in e.window)
    print(f"  outcomes on ticks e..e+{window_ticks} of the missed ones: {dict(window_outcomes)}")


def _print_reuse(policy: Policy, tally: Tally, missed: list[Outcome]) -> None:
    """Print how often reuse gave a stale verdict, and why escalations were missed."""
    print(
        f"reused verdicts below the group's true level at that tick: {tally.stale['below']} of "
        f"{sum(tally.stale.values())} reuses (above it, after the risk fell back: {tally.stale['above']})"
    )
    causes = Counter(e.cause for e in missed)
    if missed:
        print(
            f"FINDING: the gate missed {len(missed)} of {len(tally.escalations)} escalations; by cause (first of "
            f"reused > budget > cooldown > not visible on the window's ticks): {dict(causes)}"
        )
    if causes["reused"]:
        print(
            f"  reused: a group whose risk rises with nothing visible changing, or with members moving less than "
            f"{policy.distance_tolerance:g} box heights, is given its old verdict until that verdict is "
            f"{policy.recheck_s:g} s old (watched groups) or {policy.dedupe_window_s:g} s old (reuse does not "
            f"refresh it); try --dedupe-window 0 for the same scenes without reuse"
        )


def _summary(tally: Tally, missed: list[Outcome]) -> dict[str, object]:
    """The closing line's figures, in print order."""
    return {
        "calls": len(tally.calls),
        "naive_calls": len(tally.naive),
        "missed_escalations": len(missed),
        "peak_rpm": peak_per_minute(tally.calls),
        "escalations": len(tally.escalations),
        "missed_in_place": sum(1 for e in missed if e.manner == "in_place"),
        "missed_still": sum(1 for e in missed if e.still),
        "missed_with_change": sum(1 for e in missed if e.manner == "with_change"),
        "cooldown_only_calls": len(tally.cooldown_only),
        "stale_reuses": tally.stale["below"],
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 simulated minutes instead of 10")
    parser.add_argument("--minutes", type=float, help="simulated minutes (after the warm-up)")
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--llm-latency", type=float, default=1.5, help="seconds from call to reusable verdict")
    parser.add_argument("--window-ticks", type=int, default=2, help="an escalation counts as missed after this")
    parser.add_argument("--dedupe-window", type=float, help="override the 30-s dedupe window (0 turns reuse off)")
    parser.add_argument("--recheck", type=float, help="override the re-check age of watched groups (s)")
    parser.add_argument("--distance-tolerance", type=float, help="override the spacing tolerance (box heights)")
    parser.add_argument("--no-tracks", action="store_true", help="members carry no track ids (tracking off)")
    parser.add_argument(
        "--no-unserved", action="store_true", help="forget changes that got no call (the gate before it kept them)"
    )
    parser.add_argument(
        "--no-motion", action="store_true", help="members never move relative to each other (the older simulator)"
    )
    args = parser.parse_args()
    policy = Policy(llm_latency_s=args.llm_latency, tracked=not args.no_tracks, unserved=not args.no_unserved)
    if args.dedupe_window is not None:
        policy = dataclasses.replace(policy, dedupe_window_s=args.dedupe_window)
    if args.recheck is not None:
        policy = dataclasses.replace(policy, recheck_s=args.recheck)
    if args.distance_tolerance is not None:
        policy = dataclasses.replace(policy, distance_tolerance=args.distance_tolerance)
    minutes = args.minutes or (2.0 if args.quick else 10.0)
    finish(run(args.cameras, minutes, args.seed, policy, args.window_ticks, not args.no_motion))


if __name__ == "__main__":
    main()
