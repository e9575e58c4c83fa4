"""Chat templates xllm ships, for ``--chat-template NAME`` (or a Jinja file of your own).

Each follows its family's published layout, and wraps what the assistant says in ``{% generation %}`` so that
transformers returns the assistant-token mask (the loss of the completion collator). The end-of-turn marker is inside
the mask: the model must learn to stop. Families that have a tool-calling format render ``tools``, assistant
``tool_calls`` and ``tool`` messages; the others refuse tool turns in one line.

| name | family | tools |
| --- | --- | --- |
| chatml | ChatML: Qwen 2/2.5, Hermes, Yi, many fine-tunes (``<|im_start|>``); tools as Qwen 2.5 and Hermes write them | yes |
| llama3 | Llama 3.x (``<|start_header_id|>``); tools as Llama 3.1 JSON calls, results as ``ipython`` turns | yes |
| mistral | Mistral ``[INST]`` (the system prompt opens the first user turn); tools as Mistral v3 | yes |
| llama2 | Llama 2 chat ``[INST] <<SYS>>`` | no |
| gemma | Gemma ``<start_of_turn>`` (system prompt folded into the first user turn, as Gemma 3) | no |
| phi3 | Phi-3 ``<|user|>`` / ``<|assistant|>`` | no |

Kept as Python strings (not package data files) so an installed wheel always has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xllm_cli.errors import ConfigError, closest

_SPLIT_SYSTEM = r"""
{%- if messages[0].role == 'system' %}
    {%- set system_message = messages[0].content %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = '' %}
    {%- set loop_messages = messages %}
{%- endif %}"""

# A tool call's arguments: an object (what xllm prepares) as JSON, a string as it is.
_ARGUMENTS = "(function.arguments if function.arguments is string else function.arguments | tojson)"

CHATML = (
    _SPLIT_SYSTEM
    + r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if system_message %}{{- system_message + '\n\n' }}{%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}{{- '\n' + tool | tojson }}{%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif system_message %}
    {{- '<|im_start|>system\n' + system_message + '<|im_end|>\n' }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- generation %}
            {{- message.content }}
            {%- for call in message.tool_calls or [] %}
                {%- set function = call.function if call.function is defined else call %}
                {%- if message.content or not loop.first %}{{- '\n' }}{%- endif %}
                {{- '<tool_call>\n{"name": "' + function.name + '", "arguments": ' + ARGUMENTS + '}\n</tool_call>' }}
            {%- endfor %}
            {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or loop.previtem.role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or loop.nextitem.role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""
)

LLAMA3 = (
    r"{{- bos_token }}"
    + _SPLIT_SYSTEM
    + r"""
{%- if system_message or tools %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' + system_message | trim }}
    {%- if tools %}
        {%- if system_message %}{{- '\n\n' }}{%- endif %}
        {{- 'You have access to the following functions. To call a function, please respond with JSON for a function call. Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.\n\n' }}
        {%- for tool in tools %}{{- tool | tojson(indent=4) + '\n\n' }}{%- endfor %}
    {%- endif %}
    {{- '<|eot_id|>' }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == 'assistant' %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
        {%- generation %}
            {{- message.content | trim }}
            {%- for call in message.tool_calls or [] %}
                {%- set function = call.function if call.function is defined else call %}
                {%- if message.content | trim or not loop.first %}{{- '\n' }}{%- endif %}
                {{- '{"name": "' + function.name + '", "parameters": ' + ARGUMENTS + '}' }}
            {%- endfor %}
            {{- '<|eot_id|>' }}
        {%- endgeneration %}
    {%- elif message.role == 'tool' %}
        {{- '<|start_header_id|>ipython<|end_header_id|>\n\n' + message.content + '<|eot_id|>' }}
    {%- else %}
        {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' + message.content | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}
"""
)

MISTRAL = (
    _SPLIT_SYSTEM
    + r"""
{{- bos_token }}
{%- set state = namespace(first_user=true) %}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {%- if state.first_user %}
            {%- if tools %}{{- '[AVAILABLE_TOOLS] ' + tools | tojson + '[/AVAILABLE_TOOLS]' }}{%- endif %}
            {{- '[INST] ' + (system_message + '\n\n' if system_message else '') + message.content + '[/INST]' }}
            {%- set state.first_user = false %}
        {%- else %}
            {{- '[INST] ' + message.content + '[/INST]' }}
        {%- endif %}
    {%- elif message.role == 'assistant' %}
        {%- generation %}
            {%- if message.content | trim or not message.tool_calls %}{{- ' ' + message.content | trim }}{%- endif %}
            {%- if message.tool_calls %}
                {{- '[TOOL_CALLS] [' }}
                {%- for call in message.tool_calls %}
                    {%- set function = call.function if call.function is defined else call %}
                    {{- '{"name": "' + function.name + '", "arguments": ' + ARGUMENTS }}
                    {%- if call.id is defined %}{{- ', "id": "' + call.id + '"' }}{%- endif %}
                    {{- '}' + (', ' if not loop.last else ']') }}
                {%- endfor %}
            {%- endif %}
            {{- eos_token }}
        {%- endgeneration %}
    {%- elif message.role == 'tool' %}
        {{- '[TOOL_RESULTS] {"content": ' + message.content | tojson }}
        {%- if message.tool_call_id is defined %}{{- ', "call_id": "' + message.tool_call_id + '"' }}{%- endif %}
        {{- '}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception('the mistral template renders the roles system (first), user, assistant and tool') }}
    {%- endif %}
{%- endfor %}
"""
)

_NO_TOOLS = r"""
        {{- raise_exception('the NAME chat template renders the roles system, user and assistant, without tool calls: choose chatml, llama3 or mistral for tool data') }}"""

LLAMA2 = (
    _SPLIT_SYSTEM
    + r"""
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {%- set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message.content if loop.first and system_message else message.content %}
        {{- bos_token + '[INST] ' + content | trim + ' [/INST]' }}
    {%- elif message.role == 'assistant' and not message.tool_calls %}
        {%- generation %}{{- ' ' + message.content | trim + ' ' + eos_token }}{%- endgeneration %}
    {%- else %}"""
    + _NO_TOOLS.replace("NAME", "llama2")
    + r"""
    {%- endif %}
{%- endfor %}
"""
)

GEMMA = (
    r"{{- bos_token }}"
    + _SPLIT_SYSTEM
    + r"""
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {{- '<start_of_turn>user\n' + (system_message + '\n\n' if loop.first and system_message else '') + message.content | trim + '<end_of_turn>\n' }}
    {%- elif message.role == 'assistant' and not message.tool_calls %}
        {{- '<start_of_turn>model\n' }}
        {%- generation %}{{- message.content | trim + '<end_of_turn>' }}{%- endgeneration %}
        {{- '\n' }}
    {%- else %}"""
    + _NO_TOOLS.replace("NAME", "gemma")
    + r"""
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<start_of_turn>model\n' }}{%- endif %}
"""
)

PHI3 = (
    r"""
{%- for message in messages %}
    {%- if message.role in ['system', 'user'] %}
        {{- '<|' + message.role + '|>\n' + message.content + '<|end|>\n' }}
    {%- elif message.role == 'assistant' and not message.tool_calls %}
        {{- '<|assistant|>\n' }}
        {%- generation %}{{- message.content + '<|end|>' }}{%- endgeneration %}
        {{- '\n' }}
    {%- else %}"""
    + _NO_TOOLS.replace("NAME", "phi3")
    + r"""
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|assistant|>\n' }}{%- else %}{{- eos_token }}{%- endif %}
"""
)

TEMPLATES: dict[str, str] = {
    name: template.replace("ARGUMENTS", _ARGUMENTS).strip()
    for name, template in {
        "chatml": CHATML,
        "llama3": LLAMA3,
        "mistral": MISTRAL,
        "llama2": LLAMA2,
        "gemma": GEMMA,
        "phi3": PHI3,
    }.items()
}


def load_template(value: str) -> str:
    """The template a ``--chat-template`` value names: a shipped one, or the content of a Jinja file."""
    if value in TEMPLATES:
        return TEMPLATES[value]
    path = Path(value).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"--chat-template {value}: not a UTF-8 text file") from None
    match = closest(value, TEMPLATES)
    raise ConfigError(
        f"--chat-template: '{value}' is neither a template xllm ships ({', '.join(TEMPLATES)}) nor a file"
        + (f"; did you mean '{match}'?" if match else "")
    )


def set_chat_template(tokenizer: Any, value: str) -> None:
    """Give the tokenizer the template ``value`` names, after checking that it compiles."""
    import jinja2

    template = load_template(value)
    tokenizer.chat_template = template
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    except jinja2.TemplateSyntaxError as error:
        raise ConfigError(f"--chat-template {value}: line {error.lineno}: {error.message}") from None
    except Exception:  # noqa: S110 - a template may refuse this one-turn probe; real data shows the real problem
        pass
