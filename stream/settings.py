"""Clustering settings: one validated pydantic model for every knob of the pipeline.

:class:`ClusteringSettings` is what the offline ``replay`` command builds from its
options and what the Kafka service embeds in its own settings. Every field is
documented and validated (positive sizes, ranges), so a bad configuration fails at
start-up with a clear message rather than mid-stream.

Example:

>>> s = ClusteringSettings(n_clusters=4, hysteresis=0.05)
>>> s.n_clusters, s.type_weight("purchase"), s.type_weight("some-new-type")
(4, 5.0, 1.0)
>>> ClusteringSettings(n_clusters=0)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ClusteringSettings
n_clusters
  Input should be greater than or equal to 1 [type=greater_than_equal, input_value=0, input_type=int]
...
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ClusteringSettings", "DEFAULT_TYPE_WEIGHTS"]

#: How much one event of each type pulls a user's profile; unknown types weigh 1.0.
DEFAULT_TYPE_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "like": 3.0,
    "purchase": 5.0,
    "search": 1.5,
    "post": 4.0,
}


class ClusteringSettings(BaseModel):
    """Settings of the clustering pipeline (embedder, profiles, k-means, assignments, labels)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- clusters and model -------------------------------------------------------------
    n_clusters: int = Field(8, ge=1, le=4096, description="Number of interest clusters (k).")
    seed: int = Field(42, description="Seed of the k-means initialisation and reseeding.")
    kmeans_half_life: float = Field(
        50.0, gt=0, description="Half-life of the centroid statistics, in `kmeans_time_unit` units."
    )
    kmeans_time_unit: Literal["batches", "points"] = Field(
        "batches", description="What the k-means half-life counts: micro-batches or points (user updates)."
    )
    refine_every: int = Field(
        5,
        ge=0,
        description="Every this many model updates, re-cluster the model's reservoir (a sample of users, "
        "each at their current profile) with k-means++ restarts and adopt the result if it fits better; ids stay stable (0 disables).",
    )
    refine_restarts: int = Field(
        5, ge=0, le=100, description="Fresh k-means++ seedings tried by each refinement (besides the current centroids)."
    )
    refine_iterations: int = Field(
        20, ge=1, le=1000, description="Most Lloyd iterations per refinement candidate."
    )
    refine_min_gain: float = Field(
        0.002, ge=0, lt=1, description="Relative drop of the reservoir's inertia a refinement needs to be adopted."
    )
    refine_backoff: int = Field(
        8,
        ge=1,
        description="While no k-means++ restart wins a refinement, its interval doubles, up to this many times `refine_every`.",
    )

    # --- profiles -----------------------------------------------------------------------
    half_life_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="Half-life of a user's interest profile, in seconds of event time."
    )
    type_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS),
        description="Weight of one event per event type; types not listed weigh `default_type_weight`.",
    )
    default_type_weight: float = Field(1.0, ge=0, description="Weight of an event whose type is not listed.")

    # --- assignments --------------------------------------------------------------------
    hysteresis: float = Field(
        0.005,
        ge=0,
        le=2,
        description="A user moves to a new cluster only when it beats the current one by this cosine margin.",
    )
    warmup_batches: int = Field(
        20,
        ge=0,
        description="Users are first assigned once the model has learned from this many micro-batches "
        "(until then their assessment waits; an idle sweep assigns them anyway).",
    )
    maturity_margin: float = Field(
        0.0,
        ge=0,
        le=2,
        description="Extra cosine margin for young profiles: a move needs hysteresis + maturity_margin / "
        "sqrt(max(profile weight, 1)), the profile weight being its decayed sum of event weights.",
    )
    confirmations: int = Field(
        1,
        ge=1,
        le=100,
        description="A user moves only after the new cluster wins this many assessments in a row (1: at once).",
    )
    return_margin: float = Field(
        0.0,
        ge=0,
        le=2,
        description="Extra cosine margin for a move back to the cluster the user left with their last change "
        "(damps users flapping between two clusters; a real interest change is not held back).",
    )
    top_k: int = Field(3, ge=1, description="Clusters listed (with scores) in each assignment-change record.")

    # --- interest mixes -----------------------------------------------------------------
    max_interests: int = Field(
        4,
        ge=0,
        le=255,
        description="Clusters kept in each user's interest mix (decayed weight per cluster of the user's events); "
        "0 turns interest mixes off (records then carry an empty `interests`).",
    )
    min_interest_share: float = Field(
        0.08,
        gt=0,
        le=1,
        description="A cluster is one of a user's interests when its share of the user's decayed event weight "
        "is at least this (the largest cluster always is).",
    )
    interest_hysteresis: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Share hysteresis of the interest set: a cluster enters at min_interest_share + this and "
        "leaves below min_interest_share - this, so small wiggles publish nothing.",
    )
    recheck_budget: int = Field(
        256,
        ge=0,
        description="Per batch, at most this many untouched users of clusters that moved are re-assessed.",
    )

    # --- embedder -----------------------------------------------------------------------
    model_path: str | None = Field(
        None,
        description="Local sentence-transformers model directory; default: the packaged all-MiniLM-L6-v2.",
    )
    backend: Literal["torch", "openvino", "openvino-int8"] = Field(
        "openvino-int8",
        description="Encoder backend: `torch` (sentence-transformers), `openvino` (fp32) or `openvino-int8` "
        "(static int8, calibrated on the packaged demo catalog); the OpenVINO ones run without torch, on a "
        "model converted once from the local weights into `encoder_cache_dir`.",
    )
    device: str | None = Field(
        None,
        description="torch device (cpu, cuda, cuda:1, mps); default: cuda if available (torch backend). "
        "A non-CPU device selects the torch backend whatever `backend` says.",
    )
    encoder_cache_dir: str | None = Field(
        None,
        description="Where the OpenVINO backends keep their converted models (file-locked, keyed by model "
        "and library versions); default: ~/.cache/interest-stream/encoders.",
    )
    encoder_threads: int = Field(
        0, ge=0, le=1024, description="Inference threads of the OpenVINO backends (0: `OMP_NUM_THREADS` when set, else every core the process may use)."
    )
    encode_batch_size: int = Field(64, ge=1, le=8192, description="Texts per forward pass of the encoder.")
    max_seq_length: int | None = Field(
        None, ge=8, description="Token window of the encoder; default: the model's own (256 for MiniLM)."
    )
    cache_size: int = Field(100_000, ge=0, description="Embeddings kept in the LRU cache (0 disables it).")

    # --- labels -------------------------------------------------------------------------
    label_top_n: int = Field(5, ge=1, description="Label terms kept per cluster.")
    label_max_vocab: int = Field(20_000, ge=10, description="Distinct terms tracked by the cluster labeler.")
    label_half_life: float = Field(50.0, gt=0, description="Half-life of label term counts, in batches.")

    # --- centroid snapshots -------------------------------------------------------------
    snapshot_every: int = Field(
        10, ge=1, description="Publish centroid snapshots at least every this many model updates."
    )
    snapshot_min_movement: float = Field(
        0.01, ge=0, description="Publish snapshots early when a centroid moved at least this cosine distance."
    )

    @model_validator(mode="after")
    def _hysteresis_below_share(self) -> ClusteringSettings:
        if self.interest_hysteresis >= self.min_interest_share:
            raise ValueError("interest_hysteresis must be smaller than min_interest_share")
        return self

    @field_validator("type_weights")
    @classmethod
    def _weights_non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v >= 0}
        if bad:
            raise ValueError(f"type weights must be >= 0, got {bad}")
        return value

    def type_weight(self, event_type: str | None) -> float:
        """Weight of one event of ``event_type``."""
        if event_type is None:
            return self.default_type_weight
        return self.type_weights.get(event_type, self.default_type_weight)
