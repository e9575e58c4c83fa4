"""The architectures xllm is tested on, and what it refuses for each: the one list ``tests/test_architectures.py``
runs and ``docs/generate.py`` renders into docs/architectures.md (no pytest here, so the docs can import it).

A refusal is the reason xllm gives, as it appears in its one-line error; the matrix asserts that line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchitectureCase:
    architecture: str  # model_type, a key of xllm_cli.tiny.ARCHITECTURES
    tie_word_embeddings: bool | None = None  # None: the architecture's default
    quantize_refused: str | None = None
    packing_refused: str | None = None

    @property
    def label(self) -> str:
        if self.tie_word_embeddings is None:
            return self.architecture
        return f"{self.architecture} ({'tied' if self.tie_word_embeddings else 'untied'} embeddings)"

    @property
    def id(self) -> str:
        if self.tie_word_embeddings is None:
            return self.architecture
        return f"{self.architecture}-{'tied' if self.tie_word_embeddings else 'untied'}"


MATRIX: tuple[ArchitectureCase, ...] = (
    ArchitectureCase("llama", tie_word_embeddings=False),
    ArchitectureCase("llama", tie_word_embeddings=True),
    ArchitectureCase("mistral"),
    ArchitectureCase("qwen2"),
    ArchitectureCase("qwen3"),
    ArchitectureCase("gemma"),
    ArchitectureCase("gemma2"),
    ArchitectureCase("gemma3_text"),
    ArchitectureCase("phi3"),
    ArchitectureCase(
        "gpt2",
        quantize_refused="transformers cannot load a GPTQ GPT2LMHeadModel, whose weight initialisation of "
        "GPT2Attention reads the float weight of a layer GPTQ packs",
    ),
    ArchitectureCase("gpt_neox"),
    ArchitectureCase(
        "falcon",
        quantize_refused="transformers' GPTQ loader does not load quantized FalconLinear layers",
    ),
    ArchitectureCase("opt", packing_refused="lets packed samples attend to each other"),
    ArchitectureCase("bloom", packing_refused="lets packed samples attend to each other"),
)


def render_table() -> str:
    """The markdown table of docs/architectures.md."""

    def cell(refusal: str | None) -> str:
        return "yes" if refusal is None else f"refused: {refusal}"

    rows = [
        f"| {case.label} | yes | yes | {cell(case.quantize_refused)} | {cell(case.packing_refused)} |"
        for case in MATRIX
    ]
    return "\n".join(
        [
            "| architecture (model_type) | train LoRA | fuse | GPTQ quantize | packing |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
