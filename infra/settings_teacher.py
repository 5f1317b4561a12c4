"""The ``[teacher]`` section: who relabels captured cases, what goes to people, and the
OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tutorloop.infra.settings_sections import _Section


class OpenAITeacherSettings(_Section):
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama, hosted APIs)."""

    base_url: str = Field(
        default="http://127.0.0.1:8000/v1", min_length=1, description="up to and including /v1"
    )
    model: str = Field(default="gpt-4o-mini", min_length=1)
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the API key (never the key)",
    )
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20, description="on 429, 5xx and timeouts")
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=20.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=256, description="requests in flight")
    logprobs: bool = Field(default=True, description="ask for logprobs to build soft targets")
    top_logprobs: int = Field(default=20, ge=0, le=20)
    input_usd_per_mtok: float = Field(default=0.0, ge=0, description="price per 1M input tokens")
    output_usd_per_mtok: float = Field(default=0.0, ge=0, description="price per 1M output tokens")
    embeddings_model: str = Field(
        default="",
        description="model of the endpoint's /embeddings API, for representation distillation "
        "(trainer.representation_weight); empty: the endpoint gives no embeddings",
    )


class SynthesisSettings(_Section):
    """Paraphrases and contrast edits an LLM teacher writes from captured cases' scrubbed text."""

    enabled: bool = Field(
        default=False,
        description="each cycle, ask the LLM teacher (teacher.backend = 'openai') for "
        "paraphrases and label-flipping minimal edits of its knife-edge captured cases",
    )
    max_sources: int = Field(
        default=100, ge=1, description="captured cases written from per cycle, least sure first"
    )
    paraphrases: int = Field(default=1, ge=0, le=5, description="asked per source case")
    contrasts: int = Field(
        default=1, ge=0, le=5, description="minimal edits towards the runner-up label, per source"
    )
    max_per_source: int = Field(
        default=4, ge=1, le=20, description="synthetic cases one source case may ever give"
    )
    max_source_confidence: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="only cases the teacher labeled with at most this confidence are sources",
    )
    temperature: float = Field(default=0.7, ge=0, le=2)


class TeacherSettings(_Section):
    """Who relabels captured cases, and when a teacher's answer goes to human review."""

    backend: Literal["local", "openai", "human"] = Field(
        default="local",
        description="local: embeddings + logistic head; openai: chat endpoint; human: review only",
    )
    local_path: Path | None = Field(
        default=None, description="fitted local teacher folder; default: <data_dir>/teacher"
    )
    encoder: str = Field(
        default="all-mpnet-base-v2",
        min_length=1,
        description="local teacher backbone: all-mpnet-base-v2, all-minilm-l6-v2 or a folder",
    )
    knn_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="local teacher: weight of its pool's 10 nearest rows' vote, mixed into the "
        "head's answer (fixed when the teacher is fitted); 0: the head alone",
    )
    labels: list[str] = Field(
        default_factory=list,
        description="label set; empty: the champion's, else every label seen in the warehouse",
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="cases per relabel batch")
    review_below: float = Field(
        default=0.5, ge=0, le=1, description="teacher confidence below this goes to review"
    )
    spot_check_fraction: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="seeded share of teacher labels sent to human review whatever their "
        "confidence, to measure each teacher's agreement with people; 0: none",
    )
    label_budget: int = Field(
        default=0,
        ge=0,
        description="teacher labels per cycle; 0: every captured case. Cases not chosen wait "
        "for a later cycle",
    )
    acquisition: Literal["oldest", "margin", "margin_diverse"] = Field(
        default="oldest",
        description="which captured cases the budget buys: oldest first; smallest champion "
        "margin; smallest margins spread out by k-center on the champion's embeddings",
    )
    openai: OpenAITeacherSettings = Field(default_factory=OpenAITeacherSettings)
    synthesis: SynthesisSettings = Field(default_factory=SynthesisSettings)

    @model_validator(mode="after")
    def _synthesis_needs_an_llm(self) -> TeacherSettings:
        if self.synthesis.enabled and self.backend != "openai":
            raise ValueError(
                "teacher.synthesis.enabled needs an LLM teacher: set teacher.backend = 'openai'"
            )
        if self.synthesis.enabled and self.synthesis.paraphrases + self.synthesis.contrasts == 0:
            raise ValueError("teacher.synthesis asks for nothing: paraphrases and contrasts are 0")
        return self
