"""Choosing how to make the new vectors, and refusing what cannot work, with reasons.

Re-embedding every text is the expensive default. Three cheaper strategies apply when the
facts allow them (the old model comes from the source's lineage, or the
``source_provider``/``source_model`` params):

* **quantization only**: same model and size, another quantization. The source's
  quantization is changed in place; no collection, no embedding, no alias move.
* **Matryoshka truncation**: the same Matryoshka-trained model, fewer dimensions. Its
  first d values, renormalized, are exactly what the model returns for ``dimensions=d``,
  so the stored vectors are cut instead of re-embedded.
* **linear map** (opt-in): another model. A sample is embedded with it, a map from old
  to new vectors (ridge, Procrustes or low-rank) is fitted and tested on held-out
  documents, and every stored vector is mapped. An approximation, refused below
  ``min_map_retention`` or when the old model searches better.

Everything else is a **full re-embed**. :func:`choose_strategy` is pure: it takes the
facts and returns the strategy with the sentences that explain it, or raises
:class:`CompatibilityError` naming what is impossible and what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from include.qdrant_migration.choices import ProviderName, Quantization
from include.qdrant_migration.providers.base import ModelInfo
from include.qdrant_migration.spec import Strategy


class CompatibilityError(ValueError):
    """The migration cannot run as requested; the message says why and how to fix it."""


class AlreadyMigratedError(RuntimeError):
    """The alias already serves vectors of the requested model: there is nothing to do."""


@dataclass(frozen=True)
class OldModel:
    """The model that made the source's vectors, and where we learned it.

    ``model`` is the provider's canonical name for it (aliases resolved), so that two
    spellings of one model compare equal.
    """

    provider: str
    model: str
    origin: str  # "lineage" or "params"

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Facts:
    """Everything the choice depends on."""

    source_collection: str
    source_size: int
    source_distance: str
    source_points: int
    old: OldModel | None
    new_provider: ProviderName
    new_model: str
    new_info: ModelInfo
    dimensions: int | None
    current_quantization: str
    quantization: Quantization | None = None
    forced: Strategy | None = None
    allow_linear_map: bool = False
    map_sample_size: int = 2000
    min_map_retention: float = 0.85

    @property
    def new_label(self) -> str:
        return f"{self.new_provider}/{self.new_model}"

    @property
    def same_model(self) -> bool:
        if self.old is None:
            return False
        return self.old.provider == self.new_provider and self.old.model == self.new_model

    @property
    def wanted_size(self) -> int | None:
        """Requested size; for the same model, unset means "as the source"."""
        if self.dimensions is not None:
            return self.dimensions
        if self.same_model:
            return self.source_size
        return self.new_info.native_dimension

    @property
    def quantization_change(self) -> bool:
        return self.quantization is not None and self.quantization != self.current_quantization


@dataclass(frozen=True)
class Decision:
    strategy: Strategy
    reasons: list[str]


def old_model(
    lineage: Mapping[str, object],
    source_provider: str | None,
    source_model: str | None,
    new_provider: ProviderName,
    canonical: Callable[[str, str], str] = lambda _provider, model: model,
) -> OldModel | None:
    """The old model: the params win over the lineage this tool wrote into the source.

    ``canonical(provider, model)`` resolves a provider's aliases of a model name.
    """
    if source_model:
        provider = source_provider or str(lineage.get("provider") or new_provider)
        return OldModel(provider, canonical(provider, source_model), "params")
    if lineage.get("provider") and lineage.get("model"):
        provider = str(lineage["provider"])
        return OldModel(provider, canonical(provider, str(lineage["model"])), "lineage")
    return None


def choose_strategy(facts: Facts) -> Decision:
    """The strategy for these facts, with reasons; raises when the request is impossible."""
    decision = _auto(facts) if facts.forced is None else _forced(facts)
    if decision.strategy != Strategy.QUANTIZATION_ONLY:
        _check_distance(facts)
    return decision


def _auto(facts: Facts) -> Decision:
    wanted = facts.wanted_size
    if facts.same_model and wanted is not None:
        if wanted == facts.source_size:
            if facts.quantization_change:
                return _quantization_only(facts)
            raise _already_migrated(facts)
        if wanted < facts.source_size:
            _check_truncatable(facts)
            return _truncation(facts)
        return Decision(
            Strategy.FULL_REEMBED,
            [
                f"Full re-embed: the source holds {facts.source_size}-d vectors of "
                f"{facts.new_label} and {wanted} dimensions were requested; cutting vectors "
                "cannot add dimensions, so every text is embedded again."
            ],
        )
    if facts.allow_linear_map:
        return _linear_map(facts)
    return _full_reembed(facts)


def _forced(facts: Facts) -> Decision:
    if facts.forced == Strategy.QUANTIZATION_ONLY:
        _require_same_model(facts, Strategy.QUANTIZATION_ONLY)
        if facts.wanted_size != facts.source_size:
            raise CompatibilityError(
                f"quantization_only keeps the vectors as they are ({facts.source_size}-d), but "
                f"dimensions={facts.wanted_size} was requested. Leave dimensions empty."
            )
        if not facts.quantization_change:
            raise CompatibilityError(
                f"quantization_only needs a new quantization: {facts.source_collection!r} "
                f"already uses {facts.current_quantization!r}. Set quantization to another of "
                "scalar_int8, binary, product_x16, none."
            )
        return _quantization_only(facts)
    if facts.forced == Strategy.MATRYOSHKA_TRUNCATION:
        _require_same_model(facts, Strategy.MATRYOSHKA_TRUNCATION)
        _check_truncatable(facts)
        return _truncation(facts)
    if facts.forced == Strategy.LINEAR_MAP:
        if facts.same_model:
            raise CompatibilityError(
                f"linear_map maps vectors between two models, but the source's vectors already "
                f"come from {facts.new_label}. Use matryoshka_truncation or quantization_only."
            )
        return _linear_map(facts)
    if facts.forced == Strategy.IN_PLACE:
        return _in_place(facts)
    return _full_reembed(facts)


def _require_same_model(facts: Facts, strategy: Strategy) -> None:
    if facts.old is None:
        raise CompatibilityError(
            f"{strategy} reuses the stored vectors, so it must know which model made them, and "
            f"{facts.source_collection!r} has no lineage metadata. Set source_provider and "
            "source_model to the model that made them."
        )
    if not facts.same_model:
        raise CompatibilityError(
            f"{strategy} reuses the stored vectors of {facts.old.label} ({facts.old.origin}), "
            f"but the new model is {facts.new_label}: vectors of different models do not share "
            "a space. Use strategy 'full_reembed' (or 'linear_map')."
        )


def _check_truncatable(facts: Facts) -> None:
    wanted = facts.wanted_size
    model = facts.new_label
    if not facts.new_info.matryoshka:
        raise CompatibilityError(
            f"{model} is not Matryoshka-trained: the first {wanted} of its "
            f"{facts.source_size} dimensions are not a usable embedding on their own. Keep "
            f"dimensions={facts.source_size}, or migrate to a Matryoshka model "
            "(text-embedding-3-small/-large, embed-v4.0) with a full re-embed."
        )
    if not facts.new_info.normalized:
        raise CompatibilityError(
            f"{model} returns quantized (int8 or binary) vectors here: their first {wanted} "
            "values cannot be renormalized into what the model returns for fewer dimensions. "
            "Use strategy 'full_reembed'."
        )
    if wanted is None or wanted >= facts.source_size:
        raise CompatibilityError(
            f"Truncation needs fewer dimensions than the source's {facts.source_size}; "
            f"{wanted} were requested, and cutting vectors cannot add dimensions. Use strategy "
            "'full_reembed' to embed every text again at that size."
        )


def _check_distance(facts: Facts) -> None:
    allowed = facts.new_info.trained_distances()
    if allowed is None or facts.source_distance in allowed:
        return
    raise CompatibilityError(
        f"{facts.source_collection!r} uses {facts.source_distance} distance, which the new "
        f"collection keeps, but {facts.new_label} was trained for "
        f"{facts.new_info.distance} similarity (Qdrant distances that rank its vectors "
        f"correctly: {', '.join(allowed)}). Its neighbours would not be the model's. Migrate "
        "a collection that uses one of those distances."
    )


def _already_migrated(facts: Facts) -> AlreadyMigratedError:
    assert facts.old is not None
    return AlreadyMigratedError(
        f"{facts.source_collection!r} already holds {facts.source_size}-d vectors of "
        f"{facts.new_label} (per its {facts.old.origin}) with quantization "
        f"{facts.current_quantization!r}. Nothing to do; the nightly run keeps catching it "
        "up until it is retired."
    )


def _quantization_only(facts: Facts) -> Decision:
    return Decision(
        Strategy.QUANTIZATION_ONLY,
        [
            f"Quantization only: {facts.source_collection!r} already holds {facts.source_size}-d "
            f"vectors of {facts.new_label}, so its quantization is changed in place from "
            f"{facts.current_quantization!r} to {facts.quantization!r}: no new collection, no "
            "embedding calls, no points written, the alias stays. Qdrant re-quantizes in the "
            "background."
        ],
    )


def _truncation(facts: Facts) -> Decision:
    return Decision(
        Strategy.MATRYOSHKA_TRUNCATION,
        [
            f"Matryoshka truncation: {facts.new_label} is Matryoshka-trained, so the first "
            f"{facts.wanted_size} of the {facts.source_size} stored dimensions, renormalized, "
            f"are what it returns for dimensions={facts.wanted_size}. {facts.source_points} "
            "vectors are cut and copied, with no embedding calls; queries must then ask the "
            f"model for dimensions={facts.wanted_size}."
        ],
    )


def _linear_map(facts: Facts) -> Decision:
    sample = min(facts.map_sample_size, facts.source_points)
    reasons = [
        f"Linear map (allowed by allow_linear_map): {sample} of {facts.source_points} texts are "
        f"embedded with {facts.new_label}; the best of a ridge, a Procrustes and a low-rank "
        f"map from the old vectors to the new ones is fitted, and used only if its retention "
        f"(held-out documents found by their own passages, mapped vs re-embedded) is at least "
        f"{facts.min_map_retention:.0%} and it searches no worse than the old model. Every "
        "stored vector is then mapped, with no further embedding calls. Mapped vectors "
        "approximate the new model's."
    ]
    if sample >= facts.source_points:
        reasons.append(
            "The sample is the whole source, so the map saves no embedding calls here: a full "
            "re-embed would cost the same and be exact."
        )
    return Decision(Strategy.LINEAR_MAP, reasons)


def _full_reembed(facts: Facts) -> Decision:
    made_by = f" of {facts.old.label}" if facts.old is not None else ""
    return Decision(
        Strategy.FULL_REEMBED,
        [
            f"Full re-embed: {facts.source_points} points of {facts.source_collection!r} "
            f"({facts.source_size}-d{made_by}, {facts.source_distance}) are embedded again with "
            f"{facts.new_label} ({facts.wanted_size or '?'}-d); vectors of different models "
            "cannot share a space."
        ],
    )


def _in_place(facts: Facts) -> Decision:
    decision = _full_reembed(facts)
    return Decision(
        Strategy.IN_PLACE,
        [
            *decision.reasons,
            f"In place: the new vectors go into a new named vector of {facts.source_collection!r} "
            "(no second collection, no second copy of the payloads). Applications switch by "
            "reading the collection's metadata, which names the active vector.",
        ],
    )
