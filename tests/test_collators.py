"""Collators, packing and the tokenization cache: what the model is asked to learn, token by token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import user_cache
from xllm_cli.collators.base import IGNORE_INDEX
from xllm_cli.collators.completion import CompletionCollator
from xllm_cli.collators.lm import LMCollator
from xllm_cli.collators.packing import pack_features, plan_rows
from xllm_cli.settings import XllmConfig


def make_config(tiny_model: Path, **overrides) -> XllmConfig:
    return XllmConfig(model_name_or_path=str(tiny_model), **overrides)


def load_tokenizer(config: XllmConfig):
    from xllm_cli.models import load_tokenizer as load

    return load(config)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(make_config(tiny_model))


def test_missing_pad_token_becomes_eos_and_is_reported(tiny_model, capsys):
    tokenizer = load_tokenizer(make_config(tiny_model))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert "no pad token" in capsys.readouterr().err


def test_lm_collator_learns_every_real_token_and_eos_even_when_pad_is_eos(tiny_model, tokenizer):
    collator = LMCollator(tokenizer, make_config(tiny_model, collator_parts_separator=" | "))
    batch = collator([{"text_parts": ["a b", "c"]}, {"text_parts": ["a much longer sample here"]}])
    eos = tokenizer.eos_token_id
    short = tokenizer("a b | c")["input_ids"] + [eos]  # parts joined with the separator, BOS from the tokenizer
    assert batch["input_ids"][0, : len(short)].tolist() == short
    assert batch["input_ids"][0, 0].item() == tokenizer.bos_token_id
    # Padding (right, the tokenizer's side) is masked out of the loss although its id is EOS ...
    padding = batch["attention_mask"][0] == 0
    assert padding.any()
    assert (batch["labels"][0][padding] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0][padding] == eos).all()
    # ... while the real EOS that ends each sample is a target.
    assert batch["labels"][0, len(short) - 1].item() == eos
    assert batch["labels"][1, -1].item() == eos
    real = batch["attention_mask"] == 1
    assert (batch["labels"][real] == batch["input_ids"][real]).all()


def test_lm_collator_truncates_and_pads_on_the_configured_side(tiny_model, tokenizer):
    tokenizer = load_tokenizer(make_config(tiny_model, tokenizer_padding_side="left"))
    collator = LMCollator(tokenizer, make_config(tiny_model, max_length=6))
    batch = collator([{"text_parts": ["one two three four five six seven eight"]}, {"text_parts": ["a"]}])
    assert batch["input_ids"].shape[1] == 6
    assert batch["attention_mask"][1, 0].item() == 0 and batch["attention_mask"][1, -1].item() == 1


def test_completion_collator_learns_only_the_target(tiny_model, tokenizer):
    collator = CompletionCollator(tokenizer, make_config(tiny_model))
    (encoded,) = collator.encode_batch([{"text_parts": ["Question: What is ice?", "Answer:", "Frozen water."]}])
    prompt = tokenizer("Question: What is ice? Answer: ")["input_ids"]
    target = tokenizer("Frozen water.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert encoded["input_ids"] == prompt + target
    assert encoded["labels"] == [IGNORE_INDEX] * len(prompt) + target


def test_completion_collator_on_chat_learns_every_assistant_turn_only(tiny_model, tokenizer):
    collator = CompletionCollator(tokenizer, make_config(tiny_model))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ciao"},
    ]
    (encoded,) = collator.encode_batch([{"messages": messages}])
    learned = tokenizer.decode([label for label in encoded["labels"] if label != IGNORE_INDEX])
    assert learned == "Hello</s>Ciao</s>"
    lm = LMCollator(tokenizer, make_config(tiny_model)).encode_batch([{"messages": messages}])[0]
    assert lm["labels"] == lm["input_ids"]


def test_cut_away_targets_are_skipped_counted_and_reported_once(tiny_model, tokenizer, tmp_path, capsys):
    from xllm_cli.data.general import GeneralDataset
    from xllm_cli.training.tokenize import SampleSource, encode_source

    long_prompt = "word " * 40
    rows = [{"text_parts": [long_prompt, "lost"]}] * 3 + [{"text_parts": ["short", "kept answer"]}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = make_config(tiny_model, max_length=16)
    collator = CompletionCollator(tokenizer, config)
    encoded = encode_source(SampleSource("train", path=path), GeneralDataset(config), collator, config)
    assert len(encoded) == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cut away" in line]
    assert len(warnings) == 1 and "3 sample(s)" in warnings[0]


def test_tokenization_is_cached_and_reused_until_an_input_changes(tiny_model, tokenizer, tmp_path, capsys):
    from xllm_cli.data.general import GeneralDataset
    from xllm_cli.training.tokenize import SampleSource, encode_source

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text_parts": [f"sample {i}", "answer"]}) + "\n" for i in range(5)))
    config = make_config(tiny_model)
    source = SampleSource("train", path=path)
    first = encode_source(source, GeneralDataset(config), LMCollator(tokenizer, config), config)

    class NoTokenizing(LMCollator):
        def encode_batch(self, samples):
            raise AssertionError("the cache should have been used")

    # Same inputs: read from the cache, no tokenizing (the collator class is part of the key, so fake its identity).
    reused_collator = NoTokenizing(tokenizer, config)
    reused_collator.cache_identity = LMCollator(tokenizer, config).cache_identity
    second = encode_source(source, GeneralDataset(config), reused_collator, config)
    assert [second[i] for i in range(5)] == [first[i] for i in range(5)]
    assert "reusing tokenized train data" in capsys.readouterr().err
    caches = lambda: sorted(p.name for p in (user_cache(tmp_path) / "tokenized").glob("train.jsonl-*"))  # noqa: E731
    assert len(caches()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl", "xdg-cache"]  # nothing beside the data
    # A different max_length, collator or data content each make a new cache entry.
    encode_source(source, GeneralDataset(config), LMCollator(tokenizer, make_config(tiny_model, max_length=4)), config)
    encode_source(source, GeneralDataset(config), CompletionCollator(tokenizer, config), config)
    path.write_text(path.read_text() + json.dumps({"text_parts": ["one more"]}) + "\n")
    encode_source(source, GeneralDataset(config), LMCollator(tokenizer, config), config)
    assert len(caches()) == 4


def test_plan_rows_packs_every_sample_once_within_max_length():
    lengths = [5, 17, 3, 9, 12, 1, 16, 8, 7, 2]
    rows = plan_rows(lengths, 20)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 20 for row in rows)
    assert len(rows) <= 5  # 80 tokens in rows of 20: at most one row more than a perfect fit
    # Next-fit in data order would need 7 rows here; best fit decreasing packs them tight.


def test_packed_batch_loss_equals_token_weighted_unpacked_loss(tiny_model, tokenizer):
    """Isolation: with restarting position ids, no token of a packed row sees another sample."""
    import torch
    from transformers import AutoModelForCausalLM

    from xllm_cli.training.trainer import model_inputs, token_loss_sum

    config = make_config(tiny_model)
    collator = LMCollator(tokenizer, config)
    texts = ["What is ice? Ice is frozen water.", "A spider has eight legs.", "Bees make honey and wax, yes."]
    encoded = collator.encode_batch([{"text_parts": [text]} for text in texts])
    for implementation in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=implementation).eval()
        with torch.no_grad():
            total = count = 0
            for feature in encoded:  # one sample at a time: no padding, nothing to leak
                batch = collator([feature])
                loss, n = token_loss_sum(model(**model_inputs(batch)).logits, batch["labels"])
                total, count = total + loss, count + n
            unpacked = total / count
            # Two packed rows (the second padded), as the trainer feeds them.
            packed_batch = collator([pack_features(encoded[:2]), pack_features(encoded[2:])])
            assert "position_ids" in packed_batch
            loss, n = token_loss_sum(model(**model_inputs(packed_batch)).logits, packed_batch["labels"])
        assert n == count
        assert torch.allclose(loss / n, unpacked, atol=1e-5), implementation
        # And the mask matters: the same rows without position ids (samples see each other) give another loss.
        with torch.no_grad():
            leaky = {k: v for k, v in packed_batch.items() if k not in ("position_ids", "labels")}
            leaky_loss, _ = token_loss_sum(model(**leaky).logits, packed_batch["labels"])
        assert not torch.allclose(leaky_loss / n, unpacked, atol=1e-4)
