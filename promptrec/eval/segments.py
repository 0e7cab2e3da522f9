"""Segments of a run's users: where a ranker helps and where it does not.

The suite's ``[segments]`` (`SegmentSpec`) cuts the evaluated users by the length of their
history and by the popularity of their target item (and keeps them all together as one more
segment, "all users", for the paired deltas over the whole run) (head / torso / tail of the catalog ranked
by training interactions). For each segment and ranker: the headline metrics with their
bootstrap intervals, and each ranker's paired difference against retrieval on the users both
have. A segment with fewer users than ``min_users`` gets no numbers, only its size: an interval
over a handful of users says nothing.

The per-user facts come from the run folder's ``users.json`` (`EvalData.user_facts`), so a
report is recomputed from files alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from promptrec.stats import mean_ci, paired_difference
from promptrec.eval.suite import SegmentSpec, Suite

BASELINE = "retrieval"  # the row every other ranker is compared with, segment by segment


class SegmentCell(BaseModel):
    """One metric of one ranker in one segment: the mean and its interval."""

    mean: float
    low: float
    high: float


class SegmentDelta(BaseModel):
    """A ranker minus retrieval in one segment, paired over the users both have."""

    diff: float
    low: float
    high: float
    users: int


class Segment(BaseModel):
    label: str
    users: int
    too_few: bool  # under `min_users`: no numbers
    ranker_users: dict[str, int] = {}  # ranker -> its users in the segment (an LLM row may run on a sample)
    metrics: dict[str, dict[str, SegmentCell]] = {}  # ranker -> metric -> cell (with `min_users` of its users)
    deltas: dict[str, dict[str, SegmentDelta]] = {}  # ranker -> metric -> its difference to retrieval


class Segmentation(BaseModel):
    name: str  # what the users are cut by
    segments: list[Segment]


def history_labels(edges: Sequence[int]) -> list[str]:
    """[5, 20, 100] -> ["≤5", "6-20", "21-100", ">100"] (events in the history)."""
    labels, low = [], 1
    for edge in edges:
        labels.append(f"≤{edge}" if low == 1 else (f"{low}-{edge}" if edge > low else str(edge)))
        low = edge + 1
    return labels + [f">{edges[-1]}"] if edges else ["all"]


def popularity_labels(cuts: Sequence[float]) -> list[str]:
    """[0.2, 0.5] -> ["head (top 20%)", "torso (next 30%)", "tail (last 50%)"]."""
    names = ["head"] + [f"torso {n + 1}" if len(cuts) > 2 else "torso" for n in range(len(cuts) - 1)] + ["tail"]
    bounds = [0.0, *cuts, 1.0]
    shares = [f"{round((b - a) * 100):g}%" for a, b in zip(bounds, bounds[1:])]
    words = ["top"] + ["next"] * (len(cuts) - 1) + ["last"]
    return [f"{name} ({word} {share})" for name, word, share in zip(names, words, shares)]


def _bucket(value: float, bounds: Sequence[float], inclusive: bool) -> int:
    for n, bound in enumerate(bounds):
        if value <= bound if inclusive else value < bound:
            return n
    return len(bounds)


def assign_segments(facts: Mapping[str, Mapping[str, float]], spec: SegmentSpec) -> dict[str, dict[str, list[str]]]:
    """Segmentation name -> segment label -> its users, in the order of the labels."""
    cuts: dict[str, tuple[list[str], Callable[[Mapping[str, float]], int]]] = {
        "all users": (["all"], lambda f: 0),
        "history length": (history_labels(spec.history_edges),
                           lambda f: _bucket(f["history_length"], spec.history_edges, inclusive=True)),
        "target popularity": (popularity_labels(spec.popularity_cuts),
                              lambda f: _bucket(f["target_popularity_quantile"], spec.popularity_cuts, inclusive=False)),
    }
    out: dict[str, dict[str, list[str]]] = {}
    for name, (labels, which) in cuts.items():
        groups: dict[str, list[str]] = {label: [] for label in labels}
        for user, fact in facts.items():
            groups[labels[which(fact)]].append(user)
        out[name] = groups
    return out


def segment_report(per_user: Mapping[str, Mapping[str, Mapping[str, float]]],
                   facts: Mapping[str, Mapping[str, float]], suite: Suite) -> list[Segmentation]:
    """The segments of a run: ``per_user`` is ranker -> metric -> user -> value."""
    p, spec = suite.protocol, suite.segments
    out = []
    for name, groups in assign_segments(facts, spec).items():
        segments = []
        for label, users in groups.items():
            segment = Segment(label=label, users=len(users), too_few=len(users) < spec.min_users)
            if not segment.too_few:
                _fill(segment, set(users), per_user, spec.min_users, p.bootstrap, p.confidence, suite.seed)
            segments.append(segment)
        out.append(Segmentation(name=name, segments=segments))
    return out


def _fill(segment: Segment, users: set[str], per_user: Mapping[str, Mapping[str, Mapping[str, float]]],
          min_users: int, bootstrap: int, confidence: float, seed: int) -> None:
    base = per_user.get(BASELINE)
    for ranker, metrics in per_user.items():
        for metric, values in metrics.items():
            mine = [u for u in values if u in users]
            segment.ranker_users[ranker] = len(mine)
            if len(mine) < min_users:
                continue
            ci = mean_ci([values[u] for u in mine], bootstrap, confidence, seed)
            segment.metrics.setdefault(ranker, {})[metric] = SegmentCell(mean=ci.mean, low=ci.low, high=ci.high)
            if base is None or ranker == BASELINE or metric not in base:
                continue
            shared = [u for u in mine if u in base[metric]]
            if len(shared) < min_users:
                continue
            d = paired_difference([base[metric][u] for u in shared], [values[u] for u in shared], bootstrap,
                                  confidence, seed)
            segment.deltas.setdefault(ranker, {})[metric] = SegmentDelta(diff=d.diff, low=d.low, high=d.high,
                                                                         users=d.n)


def segments_json(segmentations: Sequence[Segmentation]) -> list[dict[str, Any]]:
    return [s.model_dump() for s in segmentations]
