"""What tests ask of the stand-in's batch services, by provider: OpenAI's Files and Batches
(:mod:`tests.standin.batches`), Cohere's Datasets and Embed Jobs (:mod:`.cohere_jobs`)."""

from __future__ import annotations

from tests.standin.server import StandIn


def jobs_created(standin: StandIn, provider: str) -> list[str]:
    """Every batch (OpenAI) or embed job (Cohere) created, in order."""
    return standin.batches.created if provider == "openai" else standin.cohere_jobs.created


def left_behind(standin: StandIn, provider: str) -> list[str]:
    """What a provider still holds: files (OpenAI), datasets (Cohere)."""
    if provider == "openai":
        return list(standin.batches.files)
    return list(standin.cohere_jobs.datasets)
