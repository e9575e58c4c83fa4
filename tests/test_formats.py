"""The data people have, in its published shapes: alpaca, ShareGPT, prompt/completion (TRL), OpenAI messages with
tools; formats detected per source, several sources mixed, bad or ambiguous files refused in one line.

Every file here is written by the test in the schema its format publishes (Stanford alpaca, ShareGPT as FastChat and
LLaMA-Factory write it, TRL's prompt/completion, OpenAI chat completions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_xllm
from xllm_cli.collators.templates import TEMPLATES
from xllm_cli.data.formats import ALPACA_PREAMBLE, ALPACA_PREAMBLE_INPUT, FORMATS
from xllm_cli.data.prepare import prepare_dataset
from xllm_cli.errors import ConfigError, DataError
from xllm_cli.settings import XllmConfig


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def prepared(key: str, source: str, **settings) -> list[dict]:
    prepare_dataset(XllmConfig(dataset_key=key, dataset_source=source, shuffle=False, **settings))
    return read_jsonl("train.jsonl")


def one_error_line(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_the_format_setting_offers_every_format_the_module_converts():
    from typing import get_args

    assert get_args(XllmConfig.model_fields["dataset_format"].annotation) == ("auto", *FORMATS)


# --- alpaca -----------------------------------------------------------------------------------------------------------

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
    {"instruction": "Name a colour.", "output": "Blue."},  # no input column at all
    {
        "instruction": "And in French?",
        "output": "Bleu.",
        "system": "You are a translator.",
        "history": [["Name a colour.", "Blue."]],
    },
]


def test_alpaca_is_the_stanford_prompt_for_general_and_a_conversation_for_chat(tmp_path):
    write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    general = prepared("general", "alpaca.jsonl")
    assert general[0] == {
        "text_parts": [
            f"{ALPACA_PREAMBLE_INPUT}\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:",
            "5",
        ]
    }
    assert general[1]["text_parts"] == [f"{ALPACA_PREAMBLE}\n\n### Instruction:\nSay hello.\n\n### Response:", "Hello!"]
    assert general[2]["text_parts"][0].endswith("### Instruction:\nName a colour.\n\n### Response:")
    assert general[3]["text_parts"] == [
        "You are a translator.\n\n### Instruction:\nName a colour.\n\n### Response:\nBlue.\n\n"
        "### Instruction:\nAnd in French?\n\n### Response:",
        "Bleu.",
    ]
    chat = prepared("chat", "alpaca.jsonl")
    assert chat[0] == {
        "messages": [{"role": "user", "content": "Add the numbers.\n2 and 3"}, {"role": "assistant", "content": "5"}]
    }
    assert chat[1]["messages"][0] == {"role": "user", "content": "Say hello."}
    assert chat[3] == {
        "messages": [
            {"role": "system", "content": "You are a translator."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "And in French?"},
            {"role": "assistant", "content": "Bleu."},
        ]
    }


def test_auto_says_once_per_source_which_format_it_found_and_from_which_columns(tmp_path, capsys):
    write_jsonl(tmp_path / "alpaca.jsonl", [{**row, "text": "pre-rendered"} for row in ALPACA[:2]])
    prepared("general", "alpaca.jsonl")
    lines = [line for line in capsys.readouterr().err.splitlines() if "format" in line]
    assert lines == [
        "alpaca.jsonl: alpaca format, detected from the columns instruction, output, input "
        "('text' is not used; --dataset-format text trains on it)"
    ]
    assert prepared("general", "alpaca.jsonl", dataset_format="text")[0] == {"text_parts": ["pre-rendered"]}


def test_nonstandard_column_names_are_mapped_and_a_bad_role_gets_a_close_match(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"question": "2+2?", "answer": "4", "id": 7}])
    rows = prepared("chat", "qa.jsonl", dataset_columns="instruction=question,output=answer")
    assert rows == [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    with pytest.raises(ConfigError, match=r"unknown role 'instrution'; did you mean 'instruction'\?"):
        prepared("chat", "qa.jsonl", dataset_columns="instrution=question")
    with pytest.raises(ConfigError, match="'question' is not role=column"):
        prepared("chat", "qa.jsonl", dataset_columns="question")


# --- ShareGPT ---------------------------------------------------------------------------------------------------------


def test_sharegpt_variants_become_openai_messages(tmp_path):
    tools = [{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object"}}]
    write_jsonl(
        tmp_path / "sharegpt.jsonl",
        [
            {  # FastChat: from/value, with a top-level system prompt
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello"},
                    {"from": "human", "value": "Bye"},
                    {"from": "gpt", "value": "Ciao"},
                ],
                "system": "Be brief.",
            },
            {  # role/content inside `conversations`, Gemma's `model` role
                "conversations": [{"role": "user", "content": "2+2?"}, {"role": "model", "content": "4"}]
            },
            {  # LLaMA-Factory tool use: tools as a JSON string, function_call and observation turns
                "conversations": [
                    {"from": "human", "value": "Weather in Paris?"},
                    {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
                    {"from": "observation", "value": "22 C"},
                    {"from": "gpt", "value": "It is 22 C."},
                ],
                "tools": json.dumps(tools),
            },
        ],
    )
    # ... and ShareGPT turns under a `messages` key are ShareGPT too.
    write_jsonl(
        tmp_path / "messages.jsonl", [{"messages": [{"from": "user", "value": "a"}, {"from": "gpt", "value": "b"}]}]
    )
    rows = prepared("chat", "sharegpt.jsonl,messages.jsonl")
    assert rows[0] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Ciao"},
        ]
    }
    assert rows[1]["messages"][1] == {"role": "assistant", "content": "4"}
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert rows[2] == {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "22 C"},
            {"role": "assistant", "content": "It is 22 C."},
        ],
        "tools": [{"type": "function", "function": tools[0]}],
    }
    assert rows[3] == {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}


def test_sharegpt_from_the_hub_drops_the_nulls_arrow_adds(monkeypatch, tmp_path):
    """Arrow gives every row every key of a struct column (null when absent); the nulls must not reach the template."""
    import datasets

    rows = [
        {
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello", "weight": 1}],
            "system": None,
        },
        {"conversations": [{"from": "human", "value": "Yo"}, {"from": "gpt", "value": "Hey"}], "system": "Be nice."},
    ]
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, **kw: datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    )
    converted = prepared("chat", "someone/sharegpt-set")
    assert converted == [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 1}]},
        {
            "messages": [
                {"role": "system", "content": "Be nice."},
                {"role": "user", "content": "Yo"},
                {"role": "assistant", "content": "Hey"},
            ]
        },
    ]


# --- prompt/completion --------------------------------------------------------------------------------------------------


def test_prompt_completion_as_strings_and_as_conversations(tmp_path):
    write_jsonl(tmp_path / "strings.jsonl", [{"prompt": "The sky is", "completion": " blue."}])
    write_jsonl(
        tmp_path / "conversational.jsonl",
        [
            {
                "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky colour?"}],
                "completion": [{"role": "assistant", "content": "Blue."}],
            }
        ],
    )
    assert prepared("general", "strings.jsonl") == [{"text_parts": ["The sky is", " blue."]}]
    assert prepared("chat", "strings.jsonl") == [
        {"messages": [{"role": "user", "content": "The sky is"}, {"role": "assistant", "content": " blue."}]}
    ]
    conversation = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Sky colour?"},
            {"role": "assistant", "content": "Blue."},
        ]
    }
    assert prepared("general", "conversational.jsonl") == [conversation]
    assert prepared("chat", "conversational.jsonl") == [conversation]


# --- OpenAI messages ----------------------------------------------------------------------------------------------------

OPENAI_TOOL_CONVERSATION = {
    "messages": [
        {
            "role": "developer",
            "content": [{"type": "text", "text": "Use the tools. "}, {"type": "text", "text": "Be brief."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
        {"role": "assistant", "content": "It is 22 C in Paris."},
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


def test_openai_messages_with_content_parts_tool_calls_and_tools(tmp_path):
    write_jsonl(tmp_path / "openai.jsonl", [OPENAI_TOOL_CONVERSATION])
    (row,) = prepared("chat", "openai.jsonl")
    messages = row["messages"]
    assert messages[0] == {"role": "system", "content": "Use the tools. Be brief."}
    assert messages[1] == {"role": "user", "content": "Weather in Paris?"}
    # Null content becomes "", the JSON-string arguments an object (what transformers' templates expect).
    assert messages[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}, "id": "call_1"}
        ],
    }
    assert messages[3] == {"role": "tool", "content": "22 C", "tool_call_id": "call_1"}
    assert row["tools"] == OPENAI_TOOL_CONVERSATION["tools"]
    assert prepared("general", "openai.jsonl") == [row]


# --- bad or ambiguous files: one line with file and line, nothing written -----------------------------------------------

BAD_FILES = {
    "two formats in one file": (
        [ALPACA[0], {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}],
        (),
        "data.jsonl:2: this record is sharegpt data (columns conversations) but the records before it are alpaca "
        "(detected at data.jsonl:1)",
    ),
    "first record fits two formats": (
        [{"prompt": "a", "completion": "b", "instruction": "c", "output": "d"}],
        (),
        "data.jsonl:1: the columns prompt, completion, instruction, output fit several formats "
        "(alpaca, prompt_completion)",
    ),
    "no known format": ([{"question": "q", "answer": "a"}], (), "data.jsonl:1: no known format in the columns"),
    "image content part": (
        [{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}],
        (),
        "data.jsonl:1: message 1: a 'image_url' content part; only text parts can be trained",
    ),
    "tool call arguments not JSON": (
        [
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}],
                    }
                ]
            }
        ],
        (),
        "data.jsonl:1: message 1: not valid JSON in the arguments of tool call 'f'",
    ),
    "unknown ShareGPT role": (
        [{"conversations": [{"from": "humam", "value": "Hi"}]}],
        (),
        "data.jsonl:1: message 1: unknown chat role 'humam'; did you mean 'human'?",
    ),
    "forced format, missing field": (
        [{"instruction": "a", "output": "b"}, {"instruction": "c"}],
        ("--dataset-format", "alpaca"),
        "data.jsonl:2: missing field 'output' (alpaca format)",
    ),
    "text data for the chat dataset": (
        [{"text": "just text"}],
        ("--dataset-key", "chat"),
        "data.jsonl:1: the chat dataset trains conversations, and data.jsonl is text data",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_or_ambiguous_files_are_one_line_naming_file_and_line(tmp_path, case):
    rows, flags, expected = BAD_FILES[case]
    write_jsonl(tmp_path / "data.jsonl", rows)
    (tmp_path / "train.jsonl").write_text('{"text_parts": ["earlier"]}\n')
    key = () if "--dataset-key" in flags else ("--dataset-key", "general")
    result = run_xllm("download", "--model-name-or-path", ".", *key, "--dataset-source", "data.jsonl", *flags)
    assert expected in one_error_line(result)
    assert result.returncode == 1
    assert (tmp_path / "train.jsonl").read_text() == '{"text_parts": ["earlier"]}\n'


# --- several sources ----------------------------------------------------------------------------------------------------


def test_sources_mix_with_weights_deterministically_and_eval_comes_once(tmp_path):
    folder = tmp_path / "alpaca"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"instruction": f"a{i}", "output": "x"} for i in range(10)])
    write_jsonl(folder / "test.jsonl", [{"instruction": "held out", "output": "x"}])
    write_jsonl(tmp_path / "mine.jsonl", [{"prompt": f"b{i}", "completion": "y"} for i in range(40)])

    def mixed(seed: int) -> list[str]:
        config = XllmConfig(
            dataset_key="chat", dataset_source="alpaca:3,mine.jsonl:0.5", seed=seed, shuffle=False,
            eval_local_path_to_data="eval.jsonl",
        )  # fmt: skip
        prepare_dataset(config)
        assert [row["messages"][0]["content"] for row in read_jsonl(tmp_path / "eval.jsonl")] == ["held out"]
        return [row["messages"][0]["content"] for row in read_jsonl(tmp_path / "train.jsonl")]

    first = mixed(1)
    alpaca, mine = [p for p in first if p.startswith("a")], [p for p in first if p.startswith("b")]
    assert alpaca == [f"a{i}" for i in range(10)] * 3  # weight 3: three whole passes
    assert 10 <= len(mine) <= 30 and len(set(mine)) == len(mine)  # weight 0.5: each record kept with probability 1/2
    assert mixed(1) == first  # the same seed, the same mix
    assert any(mixed(seed) != first for seed in (2, 3))


def test_repeated_source_flags_and_config_file_lists_add_up(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [ALPACA[0]])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "completion": "c"}])
    (tmp_path / "run.yaml").write_text("dataset_source: [a.jsonl, b.jsonl:2]\nshuffle: false\n")
    for flags in (
        ("--dataset-source", "a.jsonl", "--dataset-source=b.jsonl:2", "--no-shuffle"),
        ("--config", "run.yaml"),
    ):
        result = run_xllm("download", "--model-name-or-path", ".", "--dataset-key", "chat", *flags)
        assert result.returncode == 0, result.stderr
        assert "mixing a.jsonl x1, b.jsonl x2" in result.stderr
        assert [row["messages"][0]["content"] for row in read_jsonl(tmp_path / "train.jsonl")] == [
            "Add the numbers.\n2 and 3",
            "p",
            "p",
        ]


def test_a_source_list_error_names_the_source(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [ALPACA[0]])
    with pytest.raises(ConfigError, match="no such file or folder: b.jsonl"):
        prepared("general", "a.jsonl,b.jsonl")
    with pytest.raises(ConfigError, match="a.jsonl:-1: the weight must be a positive number"):
        prepared("general", "a.jsonl:-1")
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "completion": "c"}, {"text": "other"}])
    with pytest.raises(DataError, match="b.jsonl:2: this record is text data"):
        prepared("general", "a.jsonl,b.jsonl")


# --- download + train, as a user runs them ------------------------------------------------------------------------------


def train(tiny_model: Path, output: Path, *args: str) -> int:
    """``xllm train`` in-process (the binary's code path, without paying the imports again); the exit code."""
    from xllm_cli.cli.app import main

    base = [
        "train", "--model-name-or-path", str(tiny_model), "--output-dir", str(output),
        "--per-device-train-batch-size", "4", "--warmup-steps", "0", "--logging-steps", "1", "--save-steps", "1000",
        "--max-steps", "20", "--learning-rate", "3e-3", "--collator-key", "completion",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main([*base, *args])
    return exit_info.value.code


def demo_conversations() -> list[dict]:
    """ShareGPT multi-turn conversations (two demo questions each), every third one with a tool call."""
    from xllm_cli.data.demo import demo_pairs

    pairs = demo_pairs()[:16]
    rows = []
    for index in range(0, len(pairs), 2):
        (q1, a1), (q2, a2) = pairs[index], pairs[index + 1]
        turns = [{"from": "human", "value": q1}, {"from": "gpt", "value": a1}]
        if index % 3 == 0:
            call = json.dumps({"name": "lookup", "arguments": {"query": q2}})
            turns += [{"from": "human", "value": q2}, {"from": "function_call", "value": call}]
            turns += [{"from": "observation", "value": a2}, {"from": "gpt", "value": a2}]
        else:
            turns += [{"from": "human", "value": q2}, {"from": "gpt", "value": a2}]
        rows.append({"conversations": turns, "system": "Answer briefly.", "tools": json.dumps([{"name": "lookup"}])})
    return rows


def test_alpaca_trains_with_one_download_and_one_train(tiny_model, tmp_path, capsys):
    from tests.test_train import assert_loss_falls
    from xllm_cli.data.demo import demo_pairs

    write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": q, "input": "", "output": a} for q, a in demo_pairs()[:8]])
    result = run_xllm(
        "download",
        "--dataset-key",
        "general",
        "--dataset-source",
        "alpaca.jsonl:4",
        "--model-name-or-path",
        str(tiny_model),
    )
    assert result.returncode == 0, result.stderr
    assert "alpaca.jsonl: alpaca format, detected from the columns instruction, output" in result.stderr
    assert len(read_jsonl(tmp_path / "train.jsonl")) == 32
    assert train(tiny_model, tmp_path / "out", "--dataset-key", "general") == 0, capsys.readouterr().err
    assert_loss_falls(tmp_path / "out", 0.75)


def test_sharegpt_with_tool_calls_trains_a_base_model_with_a_shipped_template(tiny_model, tmp_path, capsys):
    from tests.test_train import assert_loss_falls

    write_jsonl(tmp_path / "sharegpt.jsonl", demo_conversations())
    flags = ("--dataset-key", "chat", "--dataset-source", "sharegpt.jsonl:4")
    result = run_xllm("download", *flags, "--model-name-or-path", str(tiny_model))
    assert result.returncode == 0, result.stderr
    code = train(tiny_model, tmp_path / "out", *flags, "--chat-template", "chatml")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "chat template: chatml" in err and "preparing" not in err  # download prepared it already
    assert_loss_falls(tmp_path / "out", 0.75)
    # The trained model's tokenizer carries the template it was trained with.
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == TEMPLATES["chatml"]


def test_train_prepares_missing_data_from_dataset_source_in_one_line(tiny_model, tmp_path, capsys):
    from tests.test_train import assert_loss_falls
    from xllm_cli.data.demo import demo_pairs

    write_jsonl(tmp_path / "pc.jsonl", [{"prompt": q, "completion": " " + a} for q, a in demo_pairs()[:8]])
    code = train(tiny_model, tmp_path / "out", "--dataset-key", "general", "--dataset-source", "pc.jsonl:4")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "train.jsonl does not exist: preparing it now from --dataset-source pc.jsonl:4" in err
    assert read_jsonl(tmp_path / "train.jsonl")[0]["text_parts"][1].startswith(" ")
    assert_loss_falls(tmp_path / "out", 0.75)


def test_train_on_a_raw_file_says_what_it_is_and_what_to_run(tiny_model, tmp_path, capsys):
    write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    code = train(tiny_model, tmp_path / "out", "--dataset-key", "general", "--train-local-path-to-data", "alpaca.jsonl")
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "alpaca.jsonl:1: not prepared data but alpaca records (columns instruction, input, output)" in line
    assert "--dataset-source alpaca.jsonl" in err  # the hint says what to run


# docs/data-formats.md itself runs in tests/test_docs.py, like every page.
