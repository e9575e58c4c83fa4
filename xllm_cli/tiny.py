"""A tiny model (Llama-style by default, or any architecture of ``ARCHITECTURES``) and tokenizer built locally, with
no hub.

Every step loads it exactly like a real checkpoint (``save_pretrained`` output), so it is what the tests use and what a
user can smoke-test a configuration with on a CPU before spending GPU hours. The models are built from transformers' own
config classes with random weights: the same modeling code as the real checkpoints of that architecture.
"""

from __future__ import annotations

from pathlib import Path

from xllm_cli.data.demo import demo_texts
from xllm_cli.tiny_configs import ARCHITECTURES, check_architecture

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]

# Rendered by transformers' ``apply_chat_template``; ``{% generation %}`` marks assistant text so the completion
# collator can ask for the assistant-token mask.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _training_corpus() -> list[str]:

    letters = "abcdefghijklmnopqrstuvwxyz"
    return demo_texts() + [letters, letters.upper(), "0123456789 .,:;!?'\"-()[]{}<>|/\\@#$%^&*_+=~`"]


def build_tokenizer(vocab_size: int = 512, with_pad_token: bool = False):
    """A byte-level BPE tokenizer trained on the demo corpus, wrapped as a ``PreTrainedTokenizerFast``.

    Like Llama and Mistral it has BOS/EOS and, by default, no pad token, so the pad-token handling is exercised.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + (["<pad>"] if with_pad_token else [])
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    # Like Llama: BOS is added by the tokenizer, EOS is the collator's business.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>" if with_pad_token else None,
        add_bos_token=True,
        add_eos_token=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_model(
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    architecture: str = "llama",
    tie_word_embeddings: bool | None = None,
):
    """A randomly initialised causal LM of ``architecture`` sized for a CPU, in float32.

    ``tie_word_embeddings`` None keeps the architecture's own default (Llama: untied, GPT-2 and Gemma: tied).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    check_architecture(architecture)
    settings = ARCHITECTURES[architecture](hidden_size, num_layers)
    settings.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if tie_word_embeddings is not None:
        settings["tie_word_embeddings"] = tie_word_embeddings
    config = AutoConfig.for_model(architecture, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model.to(torch.float32)


def create_tiny_model(
    path: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 512,
    with_pad_token: bool = False,
    max_shard_size: str | None = None,
    seed: int = 0,
    architecture: str = "llama",
    tie_word_embeddings: bool | None = None,
) -> Path:
    """Write a tiny model of ``architecture`` and its tokenizer to ``path`` with ``save_pretrained``; returns the
    path."""
    check_architecture(architecture)
    path = Path(path)
    tokenizer = build_tokenizer(vocab_size=vocab_size, with_pad_token=with_pad_token)
    model = build_model(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        seed=seed,
        architecture=architecture,
        tie_word_embeddings=tie_word_embeddings,
    )
    path.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    tokenizer.save_pretrained(path)
    return path
