"""What ``xllm quantize`` checks so that it never exits 0 with a folder plain transformers loads wrong.

Before the work, on a skeleton of the model on the meta device (no weights, no memory):

- every layer gptqmodel quantizes must be one that transformers' GPTQ loader (optimum's ``get_layers``) turns back
  into a quantized layer when the folder is loaded; optimum takes exact ``nn.Linear``, ``Conv1D`` and ``Conv2d`` only,
  so Falcon's ``FalconLinear`` layers would load as missing weights, re-initialised at random;
- the model's own weight initialisation, which transformers runs while loading, must not read the ``weight`` of a
  layer GPTQ replaced (GPT-2's reads ``c_proj.weight``, so transformers cannot load a GPTQ GPT-2 at all);
- the group size must divide the input width of every quantized layer, read from the layers themselves.

After saving: gptqmodel writes Phi-3's fused ``gate_up_proj`` as two layers (``gate_proj``, ``up_proj``); their
packed tensors are concatenated back into the one layer transformers has. Then the folder is loaded the way users
load it and must have exactly the model's weights, none missing, none left over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xllm_cli import errors
from xllm_cli.errors import ConfigError, XllmError
from xllm_cli.settings.config import XllmConfig

# gptqmodel's split of a fused gate/up projection (its "defuser", first half gate, second half up, as the modeling
# code's ``chunk(2)`` reads it), and the fused layer transformers has instead.
SPLIT_HALVES = ("gate_proj", "up_proj")
FUSED_NAME = "gate_up_proj"
GPTQ_TENSORS = ("qweight", "qzeros", "scales", "g_idx", "bias")


@dataclass
class GptqPlan:
    """What the checks found: the model type, its decoder layer count, the input widths of the quantized layers, and
    the modules whose fused gate/up projection gptqmodel writes split."""

    model_type: str
    layers: int | None
    widths: set[int] = field(default_factory=set)
    split_pairs: list[str] = field(default_factory=list)


def plan(model_path: Path, config: XllmConfig) -> GptqPlan:
    """Refuse (exit 2, one line, before any work) what transformers could not load back; otherwise the plan."""
    import torch
    from optimum.gptq.utils import get_block_name_with_pattern, get_layers
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        model_config = AutoConfig.from_pretrained(model_path, trust_remote_code=config.trust_remote_code)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(model_config, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        first_line = errors.first_line(error)
        raise ConfigError(
            f"--model-name-or-path {model_path}: transformers cannot build its model: {first_line}"
        ) from None
    model_type = model_config.model_type
    try:
        block = get_block_name_with_pattern(skeleton)
    except ValueError:
        raise ConfigError(
            f"quantize: {model_type} is not supported: transformers' GPTQ loader finds no decoder blocks in "
            f"{type(skeleton).__name__}"
        ) from None
    loaded_back = get_layers(skeleton, prefix=block)
    blocks = skeleton.get_submodule(block)
    result = GptqPlan(model_type, layers=len(blocks) if isinstance(blocks, torch.nn.ModuleList) else None)
    modules = dict(skeleton.named_modules())
    for name, relative in _gptqmodel_layers(model_config, config, skeleton):
        module = modules.get(name)
        if module is None:
            parent, _, leaf = name.rpartition(".")
            if leaf in SPLIT_HALVES and f"{parent}.{FUSED_NAME}" in loaded_back and parent not in result.split_pairs:
                result.split_pairs.append(parent)
            continue  # a layer gptqmodel makes up otherwise: the check after saving sees what it wrote
        if name not in loaded_back:
            raise ConfigError(
                f"quantize: {model_type} is not supported: transformers' GPTQ loader does not load quantized "
                f"{type(module).__name__} layers ({relative}), so the saved model would load "
                "with those weights missing"
            )
    result.widths |= {_input_width(layer) for layer in loaded_back.values()}
    _check_initialisation(skeleton, loaded_back, model_type)
    return result


def _gptqmodel_layers(model_config: XllmConfig, config: XllmConfig, skeleton: Any) -> list[tuple[str, str]]:
    """(full name, name within a block) of the layers gptqmodel quantizes, by its own definition of the architecture
    (none for a model type it has no definition of: it then finds layers itself, and the check after saving covers
    them)."""
    from gptqmodel import QuantizeConfig
    from gptqmodel.models.auto import MODEL_MAP

    definition = MODEL_MAP.get(model_config.model_type.lower())
    if definition is None:
        return []
    settings = QuantizeConfig(bits=config.gptq_bits, group_size=config.gptq_group_size)
    relative = [name for group in definition.simple_layer_modules(model_config, settings) for name in group]
    names = []
    for node in definition.extract_layers_node():
        try:
            layers = skeleton.get_submodule(node)
        except AttributeError:
            continue
        names += [(f"{node}.{index}.{name}", name) for index in range(len(layers)) for name in relative]
    return names


def _input_width(layer: Any) -> int:
    """Input columns of a layer optimum quantizes: Linear, transformers' Conv1D (weight stored transposed), Conv2d."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(layer, Conv1D):
        return layer.weight.shape[0]
    return getattr(layer, "in_features", None) or layer.in_channels


def _check_initialisation(skeleton: Any, loaded_back: dict[str, Any], model_type: str) -> None:
    """transformers initialises every module while loading; a model whose initialisation reads the weight of a
    quantized layer cannot be loaded. Replayed here on the skeleton with stand-ins for the quantized layers."""
    import torch

    class StandIn(torch.nn.Module):
        """Like a GPTQ layer while transformers initialises the model: packed buffers, no float weight."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("qweight", torch.empty(1, dtype=torch.int32, device="meta"))

    for name in loaded_back:
        parent, _, leaf = name.rpartition(".")
        setattr(skeleton.get_submodule(parent), leaf, StandIn())
    try:
        skeleton.initialize_weights()
    except AttributeError as error:
        if "StandIn" not in str(error):
            return  # not about the quantized layers: the check after saving decides
        reader = _initialising_module(error.__traceback__)
        raise ConfigError(
            f"quantize: {model_type} is not supported: transformers cannot load a GPTQ {type(skeleton).__name__}, "
            f"whose weight initialisation{f' of {reader}' if reader else ''} reads the float weight of a layer GPTQ "
            "packs"
        ) from None
    except Exception:  # a skeleton on the meta device cannot run every initialiser; saving is checked anyway
        return


def _initialising_module(trace: Any) -> str | None:
    """The class of the module whose ``_init_weights`` raised, from the traceback."""
    found = None
    while trace is not None:
        if trace.tb_frame.f_code.co_name == "_init_weights":
            module = trace.tb_frame.f_locals.get("module")
            found = type(module).__name__ if module is not None else found
        trace = trace.tb_next
    return found


def check_group_size(group_size: int, widths: set[int]) -> None:
    """A group spans input columns: it must divide every quantized layer's input width."""
    bad = sorted(width for width in widths if group_size != -1 and width % group_size)
    if bad:
        fitting = [size for size in (32, 64, 128) if all(width % size == 0 for width in widths)]
        raise ConfigError(
            f"--gptq-group-size {group_size} does not divide the model's layer width {bad[0]}; "
            f"use {' or '.join(map(str, fitting + [-1]))}"
        )


def fuse_split_pairs(folder: Path, parents: list[str], bits: int) -> None:
    """Write each ``parent.gate_proj`` + ``parent.up_proj`` pair as the ``parent.gate_up_proj`` transformers has.

    A GPTQ layer's tensors run along its outputs in their last dimension (qweight [in/pack, out], scales
    [groups, out], qzeros [groups, out/pack], bias [out]), so the fused layer is the two halves side by side, exactly;
    g_idx maps input columns to groups and must be the same in both.
    """
    if not parents:
        return
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        names = list(index["weight_map"])
        files = list(dict.fromkeys(index["weight_map"].values()))
    else:
        index, files = None, ["model.safetensors"]
        with safe_open(folder / files[0], "pt") as shard:
            names = list(shard.keys())  # noqa: SIM118
    # Each pair's tensors may span shards: a pair is fused in the shard where its last tensor is read.
    wanted = {
        parent: {n for n in names if n.startswith((f"{parent}.gate_proj.", f"{parent}.up_proj."))} for parent in parents
    }
    owner = {name: parent for parent, pair in wanted.items() for name in pair}
    read: dict[str, dict[str, Any]] = {parent: {} for parent in parents}
    weight_map: dict[str, str] = {}
    for file in files:
        with safe_open(folder / file, "pt") as shard:
            metadata = shard.metadata()
            tensors = {name: shard.get_tensor(name) for name in shard.keys()}  # noqa: SIM118
        for name in [n for n in tensors if n in owner]:
            read[owner[name]][name.removeprefix(owner[name] + ".")] = tensors.pop(name)
        for parent in [p for p in read if wanted[p] and len(read[p]) == len(wanted[p])]:
            tensors.update(_fused_tensors(parent, read.pop(parent), bits, torch))
        save_file(tensors, str(folder / file), metadata=metadata)
        weight_map.update(dict.fromkeys(tensors, file))
    if read:
        raise XllmError(f"quantize: the saved model lacks {next(iter(read))}.gate_proj/up_proj")
    if index is not None:
        index["weight_map"] = dict(sorted(weight_map.items()))
        index_file.write_text(json.dumps(index, indent=2) + "\n")


def _fused_tensors(parent: str, parts: dict[str, Any], bits: int, torch: Any) -> dict[str, Any]:
    gate, up = ({t: parts[f"{half}.{t}"] for t in GPTQ_TENSORS if f"{half}.{t}" in parts} for half in SPLIT_HALVES)
    if "g_idx" in gate and not torch.equal(gate["g_idx"], up["g_idx"]):
        raise XllmError(f"quantize: {parent}.gate_proj and up_proj were quantized with different column orders")
    if gate["scales"].shape[-1] * bits % 32:
        raise XllmError(f"quantize: {parent}.gate_proj's outputs do not fill whole packed words at {bits} bits")
    fused = {f"{parent}.{FUSED_NAME}.{t}": torch.cat([gate[t], up[t]], dim=-1) for t in gate if t != "g_idx"}
    if "g_idx" in gate:
        fused[f"{parent}.{FUSED_NAME}.g_idx"] = gate["g_idx"]
    return fused


def load_back(folder: Path, model_type: str, config: XllmConfig, **kwargs: Any) -> Any:
    """The quantized folder loaded as users load it (plain ``from_pretrained``, its GPTQ config); a load that fails,
    or that leaves weights missing, unused or of the wrong shape, is an error naming the architecture."""
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, trust_remote_code=config.trust_remote_code, output_loading_info=True, **kwargs
        )
    except Exception as error:
        first_line = errors.first_line(error)
        raise XllmError(
            f"quantize: {model_type}: transformers cannot load the quantized model: {type(error).__name__}: "
            f"{first_line}"
        ) from None
    problems = [
        f"{len(keys)} {kind} (e.g. {sorted(keys)[0]})"
        for kind, keys in (
            ("weights missing", info["missing_keys"]),
            ("weights unused", info["unexpected_keys"]),
            ("weights of the wrong shape", info["mismatched_keys"]),
        )
        if keys
    ]
    if problems:
        raise XllmError(
            f"quantize: {model_type}: transformers loads the quantized model wrongly: {', '.join(problems)}"
        )
    return model
