"""Chat templates and the assistant mask: the loss falls exactly on what the assistant says, as the template renders it.

The expected mask is found independently of ``{% generation %}``: the conversation is rendered to text with
``apply_chat_template``, each assistant segment is located in that text by the family's own delimiters, and every token
overlapping a segment must be learned, every other token not.
"""

from __future__ import annotations

import re

import pytest

from xllm_cli.collators.base import IGNORE_INDEX
from xllm_cli.collators.completion import CompletionCollator
from xllm_cli.collators.templates import TEMPLATES, load_template
from xllm_cli.errors import ConfigError, DataError
from xllm_cli.settings import XllmConfig

# Where each template puts what the assistant says, its end-of-turn marker included ("tiny": the tiny model's own).
ASSISTANT_SEGMENTS = {
    "tiny": r"<\|assistant\|>\n(.*?</s>)",
    "chatml": r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)",
    "llama3": r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n(.*?<\|eot_id\|>)",
    "mistral": r"(?:\[/INST\]|\[/TOOL_RESULTS\])(.*?</s>)",
    "llama2": r"\[/INST\]( .*? </s>)",
    "gemma": r"<start_of_turn>model\n(.*?<end_of_turn>)",
    "phi3": r"<\|assistant\|>\n(.*?<\|end\|>)",
}
TOOL_TEMPLATES = ("chatml", "llama3", "mistral")

MULTI_TURN = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is ice?"},
        {"role": "assistant", "content": "Frozen water."},
        {"role": "user", "content": "And steam?"},
        {"role": "assistant", "content": "Water as a gas."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome."},
    ]
}
TOOL_CALL = {
    "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "22 C and sunny"},
        {"role": "assistant", "content": "It is 22 C and sunny in Paris."},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ],
}


def tokenizer_with(tiny_model, template: str):
    from xllm_cli.models import load_tokenizer

    chosen = None if template == "tiny" else template
    return load_tokenizer(XllmConfig(model_name_or_path=str(tiny_model), chat_template=chosen))


def assert_mask_is_the_assistant_segments(tokenizer, template: str, sample: dict) -> None:
    text = tokenizer.apply_chat_template(sample["messages"], tools=sample.get("tools"), tokenize=False)
    segments = [match.span(1) for match in re.finditer(ASSISTANT_SEGMENTS[template], text, flags=re.DOTALL)]
    assistant_turns = [m for m in sample["messages"] if m["role"] == "assistant"]
    assert len(segments) == len(assistant_turns), text
    for (start, end), message in zip(segments, assistant_turns, strict=True):
        said = message["content"] or message["tool_calls"][0]["function"]["name"]
        assert said in text[start:end]  # the segment is that turn ...
        assert not any(
            m["content"] and m["content"] in text[start:end] for m in sample["messages"] if m["role"] == "user"
        )
    tokens = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    expected = [int(any(s < e_tok and e > s_tok for s, e in segments)) for s_tok, e_tok in tokens["offset_mapping"]]

    collator = CompletionCollator(tokenizer, XllmConfig(max_length=4096))
    (encoded,) = collator.encode_batch([sample])
    assert encoded["input_ids"] == tokens["input_ids"]  # the collator trains on the template's own rendering
    learned = [int(label != IGNORE_INDEX) for label in encoded["labels"]]
    assert learned == expected
    assert tokenizer.decode([t for t, keep in zip(encoded["input_ids"], learned, strict=True) if keep]).replace(
        " ", ""
    ) == "".join(text[s:e] for s, e in segments).replace(" ", "")


@pytest.mark.parametrize("template", list(ASSISTANT_SEGMENTS))
def test_multi_turn_mask_is_exactly_the_assistant_turns(tiny_model, template):
    assert_mask_is_the_assistant_segments(tokenizer_with(tiny_model, template), template, MULTI_TURN)


@pytest.mark.parametrize("template", TOOL_TEMPLATES)
def test_tool_call_mask_covers_the_calls_and_answers_not_the_results(tiny_model, template):
    tokenizer = tokenizer_with(tiny_model, template)
    text = tokenizer.apply_chat_template(TOOL_CALL["messages"], tools=TOOL_CALL["tools"], tokenize=False)
    assert "Current weather of a city." in text and '"city": "Paris"' in text and "22 C and sunny" in text
    assert_mask_is_the_assistant_segments(tokenizer, template, TOOL_CALL)


@pytest.mark.parametrize(
    "template, sample, refused",
    [
        ("tiny", TOOL_CALL, "does not render assistant tool calls ('tool_calls')"),
        ("tiny", {"messages": MULTI_TURN["messages"], "tools": TOOL_CALL["tools"]}, "tool definitions ('tools')"),
        ("gemma", TOOL_CALL, "the gemma chat template renders the roles system, user and assistant"),
    ],
)
def test_tool_use_the_template_drops_is_refused_in_one_line(tiny_model, template, sample, refused):
    tokenizer = tokenizer_with(tiny_model, template)
    with pytest.raises(DataError, match=re.escape(refused)) as error:
        CompletionCollator(tokenizer, XllmConfig()).encode_batch([MULTI_TURN, sample])
    assert "\n" not in str(error.value) and "--chat-template" in error.value.hint


def test_chat_template_is_a_shipped_name_or_a_file_with_a_close_match_otherwise(tiny_model, tmp_path):
    assert load_template("chatml") == TEMPLATES["chatml"]
    mine = tmp_path / "mine.jinja"
    mine.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    assert load_template(str(mine)) == mine.read_text()
    with pytest.raises(ConfigError, match=r"'chatm' is neither a template xllm ships .* did you mean 'chatml'\?"):
        load_template("chatm")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    with pytest.raises(ConfigError, match=r"broken.jinja: line 2: "):
        tokenizer_with(tiny_model, str(broken))


def test_a_tokenizer_without_template_says_how_to_give_one(tiny_model):
    tokenizer = tokenizer_with(tiny_model, "tiny")
    tokenizer.chat_template = None
    with pytest.raises(DataError, match="need a chat template") as error:
        CompletionCollator(tokenizer, XllmConfig()).encode_batch([MULTI_TURN])
    assert "--chat-template" in error.value.hint


@pytest.mark.parametrize("sample", [MULTI_TURN, TOOL_CALL], ids=["multi-turn", "tool-call"])
def test_a_template_without_generation_markers_is_masked_by_its_prefixes(tiny_model, sample):
    """A template that lacks ``{% generation %}`` (most published ones: ``add_generation_prompt`` does not count) is
    masked by rendering each prefix: the same assistant tokens, plus what the template writes after a turn."""
    tokenizer = tokenizer_with(tiny_model, "chatml")
    marked = CompletionCollator(tokenizer, XllmConfig()).encode_batch([sample])[0]
    tokenizer.chat_template = re.sub(r"\{%-? *(end)?generation *-?%\}", "", TEMPLATES["chatml"])
    assert "{% generation" not in tokenizer.chat_template and "add_generation_prompt" in tokenizer.chat_template
    by_prefixes = CompletionCollator(tokenizer, XllmConfig()).encode_batch([sample])[0]
    assert by_prefixes["input_ids"] == marked["input_ids"]
    learned = [i for i, label in enumerate(by_prefixes["labels"]) if label != IGNORE_INDEX]
    expected = [i for i, label in enumerate(marked["labels"]) if label != IGNORE_INDEX]
    assert set(expected) <= set(learned)
    extra = [marked["input_ids"][i] for i in learned if i not in expected]
    assert extra and tokenizer.decode(extra).strip() == ""  # the newline after each <|im_end|>
