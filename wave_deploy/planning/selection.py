"""Budget-driven choice of a ViTSpec (DESIGN section 5).

Every spec the template bank can initialize (``SearchSpace.specs()``) gets a predicted latency (at the
budget's batch and percentile) and a predicted memory from the profile; a candidate that breaks a budget is
rejected with one reason per broken budget; among the rest the objective picks (default: most FLOPs; or
highest estimated accuracy, or any callable). Ties break deterministically: lower predicted latency, fewer
parameters, shallower, narrower. No feasible candidate raises NoFeasibleModelError (exit 5) naming the
closest candidates and the budgets each breaks.

The space can hold several image sizes (``SearchSpace.img_sizes``): a profile then chooses depth x width x
resolution. Predictions are made at each candidate's image size, while a profile's budgets were set for its
``runtime.input_size_px``; ``Selection.notes`` says so when the chosen size differs, and when latencies are
extrapolated outside a calibration's measured range (each candidate's ``latency_notes``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from wave_deploy.errors import InvalidInputError, NoFeasibleModelError, UsageError
from wave_deploy.planning.latency import Prediction, load_calibration, predict, profile_calibration
from wave_deploy.planning.memory import MemoryEstimate, predict_memory
from wave_deploy.profiles import DeviceProfile
from wave_deploy.reports.judge import Limits, Observed, judge_budgets
from wave_deploy.spec import ViTSpec, flops, param_count
from wave_deploy.wave.geometry import BankGeometry


@dataclass(frozen=True)
class SearchSpace:
    """The ViT sizes a template bank can initialize: depth 1..max_depth, embed_dim a multiple of
    lcm(w, head_dim) up to max_embed_dim, num_heads = embed_dim / head_dim, at each image size of
    ``resolutions()`` (``img_sizes``, each a multiple of patch_size; empty: the bank's ``img_size`` only);
    the rest is fixed by the bank."""

    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int
    mlp_ratio: float
    w: int
    head_dim: int
    max_depth: int
    max_embed_dim: int
    img_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "img_size",
            "patch_size",
            "in_chans",
            "num_classes",
            "w",
            "head_dim",
            "max_depth",
            "max_embed_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"SearchSpace.{name} must be a positive integer, got {value!r}")
        if self.max_embed_dim < self.width_step:
            raise InvalidInputError(
                f"SearchSpace.max_embed_dim={self.max_embed_dim} is below the width step lcm(w, head_dim)={self.width_step}"
            )
        if not isinstance(self.img_sizes, tuple):
            raise InvalidInputError(
                f"SearchSpace.img_sizes must be a tuple of image sizes, got {self.img_sizes!r}"
            )
        for size in self.img_sizes:
            if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % self.patch_size:
                raise InvalidInputError(
                    f"image size {size!r} is not a positive multiple of the patch size {self.patch_size}"
                )
        if len(set(self.img_sizes)) != len(self.img_sizes):
            raise InvalidInputError(f"image sizes {list(self.img_sizes)} name one size twice")

    def resolutions(self) -> list[int]:
        """The image sizes searched, ascending: ``img_sizes``, or the bank's ``img_size`` alone."""
        return sorted(self.img_sizes) if self.img_sizes else [self.img_size]

    def with_resolutions(self, sizes: Sequence[int]) -> SearchSpace:
        """This space searching ``sizes`` (validated: positive multiples of the patch size, no repeats)."""
        return dataclasses.replace(self, img_sizes=tuple(sizes))

    @property
    def width_step(self) -> int:
        return math.lcm(self.w, self.head_dim)

    @functools.cached_property
    def geometry(self) -> BankGeometry:
        """The bank geometry this space searches: the one place the width rule and a spec's checks live."""
        return BankGeometry.create(
            img_size=self.img_size, patch_size=self.patch_size, in_chans=self.in_chans,
            num_classes=self.num_classes, w=self.w, head_dim=self.head_dim, mlp_ratio=self.mlp_ratio,
            max_depth=self.max_depth, max_embed_dim=self.max_embed_dim,
        )  # fmt: skip

    def widths(self) -> list[int]:
        """Every width the bank serves (``BankGeometry.valid_embed_dims``)."""
        return self.geometry.valid_embed_dims()

    def spec(
        self, depth: int, embed_dim: int, num_heads: int | None = None, img_size: int | None = None
    ) -> ViTSpec:
        """A checked ViTSpec of this space's geometry (``BankGeometry.make_spec``: heads default to
        embed_dim / head_dim, the image size to the bank's), for this space's task."""
        return self.geometry.make_spec(
            depth, embed_dim, num_heads, num_classes=self.num_classes, img_size=img_size
        )

    def specs(self) -> list[ViTSpec]:
        return [
            self.spec(depth, width, img_size=size)
            for size in self.resolutions()
            for depth in range(1, self.max_depth + 1)
            for width in self.widths()
        ]

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["img_sizes"] = self.resolutions()
        return data

    @classmethod
    def from_bank(cls, geometry, num_classes: int | None = None) -> SearchSpace:
        """Every size a template bank (its ``BankGeometry``) can initialize, for a task of ``num_classes``."""
        g = geometry
        return cls(
            img_size=g.img_size,
            patch_size=g.patch_size,
            in_chans=g.in_chans,
            num_classes=num_classes or g.num_classes,
            mlp_ratio=g.mlp_ratio,
            w=g.w,
            head_dim=g.head_dim,
            max_depth=g.max_depth,
            max_embed_dim=g.max_embed_dim,
        )


# A broad space at the built-in data's geometry: the design space of calibrations and of tests. Plans and
# builds use the space of their template bank (SearchSpace.from_bank).
DEFAULT_SEARCH_SPACE = SearchSpace(
    img_size=28,
    patch_size=4,
    in_chans=1,
    num_classes=10,
    mlp_ratio=4.0,
    w=32,
    head_dim=32,
    max_depth=12,
    max_embed_dim=384,
)


@dataclass(frozen=True)
class Candidate:
    spec: ViTSpec
    params: int
    flops: int  # per image, attention products included
    latency: Prediction  # p50 at the budget's batch
    latency_at_budget_ms: float  # the prediction mapped to the budget's percentile
    memory: MemoryEstimate
    accuracy: float | None  # estimate, where one was given
    objective: float
    reasons: tuple[str, ...]  # one per broken budget; empty when feasible

    @property
    def feasible(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "name": self.spec.name,
            "params": self.params,
            "flops": self.flops,
            "latency_ms": self.latency.latency_ms,
            "latency_at_budget_ms": self.latency_at_budget_ms,
            "latency_source": self.latency.source,
            "latency_notes": list(self.latency.notes),
            "memory_mib": self.memory.total_mib,
            "build_memory_mib": self.memory.build_peak_mib,
            "accuracy": self.accuracy,
            "objective": self.objective,
            "feasible": self.feasible,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Selection:
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    frontier: tuple[Candidate, ...]  # Pareto: objective vs predicted latency, over all candidates
    profile: str
    objective: str
    latency_source: str
    notes: tuple[str, ...]
    headroom: dict | None = None  # planning.headroom: the bank's largest size far below the budgets

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "objective": self.objective,
            "latency_source": self.latency_source,
            "chosen": {
                **self.chosen.to_dict(),
                "latency": self.chosen.latency.to_dict(),
                "memory": self.chosen.memory.to_dict(),
            },
            "frontier": [c.to_dict() for c in self.frontier],
            "n_candidates": len(self.candidates),
            "n_feasible": sum(c.feasible for c in self.candidates),
            "rejected": [
                {"name": c.spec.name, "reasons": list(c.reasons)} for c in self.candidates if not c.feasible
            ],
            "notes": list(self.notes),
            "headroom": self.headroom,
        }


Objective = str | Callable[[Candidate], float]
AccuracyTable = Mapping[tuple[int, int], float] | Callable[[ViTSpec], float | None]


def _accuracy_of(spec: ViTSpec, accuracy: AccuracyTable | None) -> float | None:
    if accuracy is None:
        return None
    if callable(accuracy):
        return accuracy(spec)
    return accuracy.get((spec.depth, spec.embed_dim))


def _reasons(
    latency_ms: float, memory: MemoryEstimate, accuracy: float | None, profile: DeviceProfile, batch: int
) -> tuple[str, ...]:
    limits = dataclasses.replace(Limits.of_profile(profile.budgets), latency_batch=batch)
    observed = Observed(
        latency_ms=latency_ms,
        memory_mib=memory.total_mib,
        build_memory_mib=memory.build_peak_mib,
        accuracy=accuracy,
        accuracy_source="estimate",
    )
    return judge_budgets(limits, observed).reasons


def evaluate(
    spec: ViTSpec,
    profile,
    *,
    calibration=None,
    objective: Objective = "flops",
    accuracy: AccuracyTable | None = None,
    batch: int | None = None,
) -> Candidate:
    """Predict one spec on a profile and judge it against the budgets."""
    batch = profile.budgets.latency_batch if batch is None else batch
    latency = predict(spec, profile, batch, calibration=calibration)
    at_budget = latency.at(profile.budgets.latency_percentile)
    memory = predict_memory(spec, profile, batch)
    acc = _accuracy_of(spec, accuracy)
    candidate = Candidate(
        spec=spec,
        params=param_count(spec),
        flops=flops(spec),
        latency=latency,
        latency_at_budget_ms=at_budget,
        memory=memory,
        accuracy=acc,
        objective=0.0,
        reasons=_reasons(at_budget, memory, acc, profile, batch),
    )
    return dataclasses.replace(candidate, objective=_objective_value(candidate, objective))


def _objective_value(candidate: Candidate, objective: Objective) -> float:
    if callable(objective):
        return float(objective(candidate))
    if objective == "flops":
        return float(candidate.flops)
    if objective == "params":
        return float(candidate.params)
    if objective == "accuracy":  # candidates without an estimate rank below every estimated one
        return candidate.accuracy if candidate.accuracy is not None else -math.inf
    raise UsageError(f"unknown objective {objective!r}; expected 'flops', 'params', 'accuracy' or a callable")


def _rank_key(c: Candidate):
    """Best first: objective, then lower latency (e.g. accuracy ties), more FLOPs, fewer params, shallower,
    narrower, smaller images."""
    return (
        -c.objective,
        c.latency.latency_ms,
        -c.flops,
        c.params,
        c.spec.depth,
        c.spec.embed_dim,
        c.spec.num_heads,
        c.spec.img_size,
    )


def choose(candidates: Sequence[Candidate]) -> Candidate | None:
    """The best feasible candidate, independent of the order of ``candidates``; None when none is feasible."""
    feasible = [c for c in candidates if c.feasible]
    return min(feasible, key=_rank_key) if feasible else None


def pareto_frontier(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """Candidates no other beats on both objective (higher) and predicted latency (lower), by latency."""
    ordered = sorted(candidates, key=lambda c: (c.latency.latency_ms, *_rank_key(c)))
    frontier, best = [], -math.inf
    for c in ordered:
        if c.objective > best:
            frontier.append(c)
            best = c.objective
    return tuple(frontier)


def _violation(c: Candidate, profile) -> float:
    """How far a candidate is from fitting: the largest ratio of predicted value to budget."""
    b = profile.budgets
    ratios = [c.latency_at_budget_ms / b.latency_ms, c.memory.total_mib / b.memory_mib]
    if b.build_memory_mib is not None and c.memory.build_peak_mib is not None:
        ratios.append(c.memory.build_peak_mib / b.build_memory_mib)
    if b.min_accuracy is not None and c.accuracy is not None and c.accuracy > 0:
        ratios.append(b.min_accuracy / c.accuracy)
    return max(ratios)


def closest(candidates: Sequence[Candidate], profile, n: int = 3) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (_violation(c, profile), *_rank_key(c)))[:n]


def selection_notes(chosen: Candidate, candidates: Sequence[Candidate], profile) -> tuple[str, ...]:
    """What a reader of the plan must know: the chosen size's image size is not the one the profile's budgets
    were set for; its latency is extrapolated beyond the calibration; how many candidates are."""
    notes = []
    if profile.runtime.input_size_px != chosen.spec.img_size:
        notes.append(
            f"budgets were set for {profile.runtime.input_size_px} px inputs (runtime.input_size_px); the "
            f"chosen size is predicted at {chosen.spec.img_size} px"
        )
    notes += [f"latency of the chosen size {n}" for n in chosen.latency.notes]
    outside = sum(bool(c.latency.notes) for c in candidates)
    if outside:
        notes.append(
            f"{outside} of {len(candidates)} candidates' latencies are extrapolated outside the calibrated "
            "range (latency_notes)"
        )
    return tuple(notes)


def resolve_calibration(profile, calibration=None):
    """A calibration file's path loaded, a Calibration as given, or (None) the profile's own or analytic."""
    if isinstance(calibration, str) or hasattr(calibration, "__fspath__"):
        return load_calibration(calibration)
    return profile_calibration(profile) if calibration is None else calibration


def select(
    profile,
    space: SearchSpace = DEFAULT_SEARCH_SPACE,
    *,
    objective: Objective = "flops",
    accuracy: AccuracyTable | None = None,
    calibration=None,
) -> Selection:
    """Choose the spec that fits ``profile``'s budgets best; raise NoFeasibleModelError when none fits."""
    if objective == "accuracy" and accuracy is None:
        raise UsageError("objective 'accuracy' needs accuracy estimates (a table or a callable)")
    calibration = resolve_calibration(profile, calibration)
    candidates = tuple(
        evaluate(spec, profile, calibration=calibration, objective=objective, accuracy=accuracy)
        for spec in space.specs()
    )
    chosen = choose(candidates)
    if chosen is None:
        near = "; ".join(f"{c.spec.name} ({', '.join(c.reasons)})" for c in closest(candidates, profile))
        raise NoFeasibleModelError(
            f"no ViT size in the search space fits profile '{profile.name}': closest: {near}",
            hint="relax the budgets, calibrate the profile, or use a bank with smaller sizes",
        )
    notes = list(selection_notes(chosen, candidates, profile))
    objective_name = objective if isinstance(objective, str) else getattr(objective, "__name__", "custom")
    return Selection(
        chosen=chosen,
        candidates=candidates,
        frontier=pareto_frontier(candidates),
        profile=profile.name,
        objective=objective_name,
        latency_source=chosen.latency.source,
        notes=tuple(notes),
    )
