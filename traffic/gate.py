"""Which groups of one camera frame go to the vision model: cooldown, unchanged-scene dedupe, budget.

``decide`` applies these rules, in order, to the frame's groups:

1. No groups: nothing to do, ``skipped_reason="no_groups"``.
2. Reuse: a group reuses a remembered OK verdict of the same scene (``same_scene``: the same member
   classes, hence the same member count, the same coarse box, and member spacing within
   ``distance_tolerance`` of the spacing when that verdict was made) if the verdict is younger than its
   age limit (and not in the future): ``dedupe_window_s``, or ``recheck_s`` for a *watched* group, one
   whose verdict was ``low`` or above or that holds a person, bicycle or motorcycle next to a car,
   truck or bus (``watched``). Of several such verdicts the newest is taken; a group whose members are
   all tracked is compared with the newest verdict for its tracks only (members that moved away and came
   back changed since that verdict), and not at all when a change among its tracks went unserved since
   that verdict (``unserved``: a group of some of these tracks needed a call and got none, e.g. a
   motorcycle joined under cooldown and the detector missed it the next frame). It is re-labelled with the
   new group index, with zero latency and usage since no call is made for this frame. Reuse is free, so
   it applies under cooldown and with no budget left. ERROR verdicts are never reused.
3. Every group reused: the frame counts as assessed (``skipped_reason=None``, ``assess`` empty).
4. Cooldown active: the remaining groups are not assessed (and not ``dropped``),
   ``skipped_reason="cooldown"`` — except *urgent* groups (their tracks are in a near miss or moving the
   wrong way this frame), which go on to rule 5 and are never served a remembered verdict, and *owed*
   groups (a change among their tracks got no call on an earlier frame, after their latest verdict:
   the cooldown refuses a change once, not twice). Groups that need a call and get none are returned
   as ``unserved`` for the caller to pass back with later frames.
5. Otherwise the remaining groups are ranked largest first (object count, then lower index) and at
   most ``min(max_groups, budget_left)`` are assessed; the rest are ``dropped``. If that leaves
   nothing to assess (no budget left), ``skipped_reason="budget"``.

``assess`` and ``dropped`` are in ascending group order, ``reuse`` likewise; ``forget`` names the
remembered verdicts that no rule will reuse again, for the caller to drop. The frame's expected
groups are ``assess`` plus the reused indexes (``GateDecision.expected``); the reused verdicts are
folded in next to the chord's results. A ``skipped_reason`` says why the non-reused groups got no
call; reused verdicts are valid whatever it is.

A verdict is remembered under its group's signature (``group_signature``): the scene key — with every
member tracked, the epoch and the members' track ids (the group keeps its verdict as it moves, and is
offered again when a track joins or leaves it); otherwise the sorted multiset of member classes plus the
group box quantised to a ``cells``×``cells`` grid of the image — then ``|`` and the group's *spacing*
(``spacing``): for each pair of member classes, the smallest distance between the centres of two such
members, in the mean height of their two boxes (with every member tracked: the distance of every pair of
members, by track id). A new member or a lost member changes the key (without tracks, a move of the
whole group too); members closing in on each other (a pedestrian stepping off the kerb towards a queued
car) change the spacing, by more than the tolerance or by more than ``CLOSING_SHARE`` of their distance. The spacing is
compared with a tolerance against the verdict's own spacing, not quantised, so box jitter never
breaks reuse while drift does once it adds up, wherever it starts. A box edge that crosses a grid line
changes the key: that costs one extra call, never a stale verdict.

Some changes of risk show in nothing a detector reports (a light turning red, a driver on the phone);
only asking again finds those, which is what the shorter ``recheck_s`` of watched groups does.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from traffic.grouping import largest_groups
from traffic.models import GroupContext, GroupVerdict, RiskLevel, Usage

VULNERABLE = frozenset({"person", "bicycle", "motorcycle"})
"""Road users a group is watched for when they are next to a ``MOTOR_VEHICLES`` member."""
MOTOR_VEHICLES = frozenset({"car", "truck", "bus"})

_SPACING_MARK = "|"
"""Separates a signature's scene key from its spacing."""


class SkipReason(enum.StrEnum):
    """Why the groups that needed a call got none."""

    NO_GROUPS = "no_groups"
    COOLDOWN = "cooldown"
    BUDGET = "budget"


@dataclass(frozen=True)
class RecentVerdict:
    """The latest verdict for a group signature and when it was assessed (epoch s)."""

    verdict: GroupVerdict
    assessed_at: float


@dataclass(frozen=True)
class GateDecision:
    """What to do with one frame's groups."""

    assess: tuple[int, ...]
    """Group indexes to send to the vision model."""
    reuse: tuple[tuple[int, GroupVerdict], ...]
    """Group index → recent verdict of the unchanged group, re-labelled with that index."""
    skipped_reason: SkipReason | None
    dropped: tuple[int, ...]
    """Groups that needed a call but were left out by the budget or ``max_groups``."""
    forget: tuple[str, ...] = ()
    """Remembered signatures that no rule will reuse again (ERROR, ``dedupe_window_s`` old, or not written
    by ``group_signature``), in ``recent``'s order: each call remembers a new one, so drop these."""
    unserved: tuple[str, ...] = ()
    """Scene keys of the fully tracked groups that needed a call and got none (cooldown, budget,
    ``max_groups``): the caller remembers each with this frame's time and passes them back as ``unserved``."""
    forget_unserved: tuple[str, ...] = ()
    """Remembered unserved keys ``dedupe_window_s`` old (or unreadable): drop these."""

    @property
    def expected(self) -> tuple[int, ...]:
        """Groups whose verdicts make up the frame: assessed and reused, ascending."""
        return tuple(sorted((*self.assess, *(index for index, _ in self.reuse))))


def _cell(value: float, extent: int, cells: int) -> int:
    """Grid cell (0..cells-1) of a coordinate along an image side of ``extent`` pixels."""
    return min(cells - 1, max(0, math.floor(value / extent * cells)))


def _fully_tracked(context: GroupContext) -> bool:
    """Whether every member of the group has a track id (and the group its key)."""
    return context.group.key is not None and len(context.group.tracks) == len(context.detections)


def scene_key(context: GroupContext, *, cells: int = 8) -> str:
    """Who is in the group: with every member tracked, its tracks, e.g. ``"tracks:e2:3,7,9"`` (so the key
    follows the group as it moves, and changes when a track joins or leaves); else its classes and coarse
    place, e.g. ``"car,car,person@2,3,4,5"`` (classes @ grid box)."""
    if cells < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    group = context.group
    if group.key is not None and _fully_tracked(context):
        epoch = group.key.split("t", 1)[0]
        return f"tracks:{epoch}:{','.join(str(t) for t in group.tracks)}"
    width, height = context.image_size
    x1, y1, x2, y2 = context.group.bbox
    grid = (
        _cell(x1, width, cells),
        _cell(y1, height, cells),
        _cell(x2, width, cells),
        _cell(y2, height, cells),
    )
    classes = ",".join(sorted(d.cls for d in context.detections))
    return f"{classes}@{','.join(str(c) for c in grid)}"


def track_set(key: str) -> tuple[str, frozenset[int]] | None:
    """The epoch and track ids of a ``scene_key`` made of tracks (``"tracks:e2:3,7,9"``); None for others."""
    kind, _, rest = key.partition(":")
    epoch, mark, ids = rest.partition(":")
    if kind != "tracks" or not mark:
        return None
    try:
        return epoch, frozenset(int(t) for t in ids.split(",")) if ids else frozenset()
    except ValueError:
        return None


def spacing(context: GroupContext) -> tuple[float, ...]:
    """How close the members are: for each pair of member classes, in sorted order, the smallest distance
    between the centres of two such members, in the mean height of their two boxes (so that it does not
    depend on how near the camera the group is); with every member tracked, the distance of every pair of
    members, in track id order."""
    members = context.detections
    if _fully_tracked(context):
        # Identities known: every pair of members, by track id, so any member moving is seen.
        ordered = sorted(members, key=lambda d: d.track_id or 0)
        return tuple(
            math.dist(a.center, b.center) / max(1.0, (a.bbox[3] - a.bbox[1] + b.bbox[3] - b.bbox[1]) / 2)
            for i, a in enumerate(ordered)
            for b in ordered[i + 1 :]
        )
    closest: dict[tuple[str, str], float] = {}
    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            pair = (a.cls, b.cls) if a.cls <= b.cls else (b.cls, a.cls)
            scale = max(1.0, (a.bbox[3] - a.bbox[1] + b.bbox[3] - b.bbox[1]) / 2)
            distance = math.dist(a.center, b.center) / scale
            closest[pair] = min(distance, closest.get(pair, math.inf))
    return tuple(closest[pair] for pair in sorted(closest))


def group_signature(context: GroupContext, *, cells: int = 8) -> str:
    """What a verdict is remembered under: ``scene_key``, ``|``, ``spacing`` to two decimals.

    E.g. ``"car,car,person@0,1,1,2|1.52,0.81"`` (car-car, car-person).
    """
    return f"{scene_key(context, cells=cells)}{_SPACING_MARK}{','.join(f'{d:.2f}' for d in spacing(context))}"


def _parse(signature: str) -> tuple[str, tuple[float, ...]] | None:
    """A signature's scene key and spacing; None for text ``group_signature`` does not write."""
    key, mark, numbers = signature.rpartition(_SPACING_MARK)
    if not mark:
        return None
    try:
        return key, tuple(float(n) for n in numbers.split(",")) if numbers else ()
    except ValueError:
        return None


CLOSING_SHARE = 0.4
"""A pair that closed in by this share of its distance moved, even by less than the tolerance (members
already close: a pedestrian half a body from a car stepping next to it)."""
CLOSING_FLOOR = 0.04
"""...but never for less than this many box heights (box jitter of members that touch)."""


def same_scene(spacing_now: Sequence[float], spacing_then: Sequence[float], tolerance: float) -> bool:
    """Whether two spacings of groups with one scene key are the same scene: no pair moved more than
    ``tolerance``, and no pair closed in by more than ``CLOSING_SHARE`` of its distance."""
    return len(spacing_now) == len(spacing_then) and all(
        abs(now - then) <= tolerance and then - now <= max(CLOSING_FLOOR, CLOSING_SHARE * then)
        for now, then in zip(spacing_now, spacing_then, strict=True)
    )


def watched(context: GroupContext, verdict: GroupVerdict) -> bool:
    """Whether the group's verdicts are re-checked after ``recheck_s`` rather than ``dedupe_window_s``."""
    classes = {d.cls for d in context.detections}
    return verdict.risk_level.rank >= RiskLevel.LOW.rank or bool(classes & VULNERABLE and classes & MOTOR_VEHICLES)


def _reusable(recent: RecentVerdict, now: float, window_s: float) -> bool:
    """Whether a remembered verdict may stand in for a new call."""
    return recent.verdict.ok and 0.0 <= now - recent.assessed_at < window_s


_Remembered = dict[str, list[tuple[tuple[float, ...], RecentVerdict]]]
"""Scene key → the verdicts remembered for it, each with the spacing it was made at."""


def _remembered(
    recent: Mapping[str, RecentVerdict], now: float, window_s: float
) -> tuple[_Remembered, tuple[str, ...]]:
    """The verdicts that may still be reused, by scene key; and the signatures of the others."""
    by_key: _Remembered = {}
    forget: list[str] = []
    for signature, remembered in recent.items():
        parsed = _parse(signature)
        if parsed is None or not remembered.verdict.ok or now - remembered.assessed_at >= window_s:
            forget.append(signature)
        else:
            by_key.setdefault(parsed[0], []).append((parsed[1], remembered))
    return by_key, tuple(forget)


_Change = tuple[str, frozenset[int], float]
"""An unserved change: its epoch, its tracks, when it was last seen."""


def _changes(unserved: Mapping[str, float], now: float, window_s: float) -> tuple[list[_Change], tuple[str, ...]]:
    """The unserved changes still in the window; and the keys of the others."""
    changes: list[_Change] = []
    forget: list[str] = []
    for key, at in unserved.items():
        tracks = track_set(key)
        if tracks is None or not 0.0 <= now - at < window_s:
            forget.append(key)
        else:
            changes.append((tracks[0], tracks[1], at))
    return changes, tuple(forget)


def _changed_since(changes: Sequence[_Change], key: str, since: float) -> bool:
    """Whether a change among the tracks of scene key ``key`` went unserved after ``since``."""
    tracks = track_set(key)
    return tracks is not None and any(
        epoch == tracks[0] and at > since and not ids.isdisjoint(tracks[1]) for epoch, ids, at in changes
    )


def _relabel(verdict: GroupVerdict, index: int) -> GroupVerdict:
    """The verdict for group ``index`` of this frame, with no latency or usage (no call made)."""
    return dataclasses.replace(verdict, group_index=index, latency_s=0.0, usage=Usage())


def decide(
    contexts: Sequence[GroupContext],
    *,
    now: float,
    cooldown_active: bool,
    recent: Mapping[str, RecentVerdict],
    budget_left: int,
    max_groups: int,
    dedupe_window_s: float,
    recheck_s: float,
    distance_tolerance: float,
    cells: int = 8,
    urgent: Collection[int] = (),
    unserved: Mapping[str, float] | None = None,
) -> GateDecision:
    """Split one frame's groups into assess / reuse / dropped (rules in the module docstring).

    ``urgent``: indexes of groups whose tracks are in a near miss or wrong-way movement this frame; they
    reuse no verdict and are offered even under cooldown (budget and ``max_groups`` still apply).
    ``unserved``: scene key → when it was last in ``GateDecision.unserved`` (epoch s).
    """
    if max_groups < 1:
        raise ValueError(f"max_groups must be >= 1, got {max_groups}")
    remembered, forget = _remembered(recent, now, dedupe_window_s)
    changes, forget_unserved = _changes(unserved or {}, now, dedupe_window_s)
    if not contexts:
        return GateDecision((), (), SkipReason.NO_GROUPS, (), forget, (), forget_unserved)
    reuse: list[tuple[int, GroupVerdict]] = []
    pending: list[GroupContext] = []
    owed: set[int] = set()
    for context in sorted(contexts, key=lambda c: c.group.index):
        here = spacing(context)
        key = scene_key(context, cells=cells)
        known = remembered.get(key, [])
        if _fully_tracked(context):
            # One group has these tracks: only its latest verdict counts (members who moved away and came
            # back are a change since that verdict, not the scene of an older one), and none if a change
            # among them went unserved since.
            latest = max(known, key=lambda item: item[1].assessed_at) if known else None
            since = latest[1].assessed_at if latest is not None else -math.inf
            known = [] if latest is None or _changed_since(changes, key, since) else [latest]
            if _changed_since(changes, key, since):
                owed.add(context.group.index)
        candidates = [
            r
            for then, r in known
            if same_scene(here, then, distance_tolerance)
            and _reusable(r, now, min(dedupe_window_s, recheck_s) if watched(context, r.verdict) else dedupe_window_s)
        ]
        if candidates and context.group.index not in urgent:
            found = max(reversed(candidates), key=lambda r: r.assessed_at)  # a tie: the one remembered last
            reuse.append((context.group.index, _relabel(found.verdict, context.group.index)))
        else:
            pending.append(context)
    if not pending:
        return GateDecision((), tuple(reuse), None, (), forget, (), forget_unserved)
    # A change the cooldown has refused once is not refused again (the budget still applies).
    waiting = [c for c in pending if c.group.index in urgent or c.group.index in owed] if cooldown_active else pending
    chosen: tuple[int, ...] = ()
    if waiting:
        chosen = tuple(g.index for g in largest_groups([c.group for c in waiting], min(max_groups, budget_left)))
    dropped = tuple(c.group.index for c in waiting if c.group.index not in chosen)
    reason = None if chosen else SkipReason.COOLDOWN if cooldown_active else SkipReason.BUDGET
    missed = tuple(scene_key(c, cells=cells) for c in pending if _fully_tracked(c) and c.group.index not in chosen)
    return GateDecision(chosen, tuple(reuse), reason, dropped, forget, missed, forget_unserved)
