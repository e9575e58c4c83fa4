"""``quantize`` as a plain Python call: GPTQ post-training quantization with gptqmodel, and its quality cost.

Backend: gptqmodel's own API (it quantizes on CPU too; auto-gptq does not import with transformers 5 and needs CUDA).
The result is a normal GPTQ checkpoint (``quantization_config`` in config.json, packed int32 weights) that plain
``AutoModelForCausalLM.from_pretrained`` loads: ``gptq_support`` refuses up front what transformers could not load
back, and the written folder is loaded back before it is moved into place. Calibration text comes from
``quantization_dataset_id`` (a hub dataset id or a local file) or from the prepared train data; a few held-out samples
of the same source measure perplexity before and after, printed and saved as ``quality.json`` next to the model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xllm_cli import console, errors
from xllm_cli.checkpoint import staged_folder
from xllm_cli.console import progress
from xllm_cli.data.base import read_prepared
from xllm_cli.data.general import general_sample, looks_like_path, read_source
from xllm_cli.data.prepare import prepare_dataset
from xllm_cli.errors import ConfigError, DataError, XllmError
from xllm_cli.gptq_support import check_group_size, fuse_split_pairs, load_back, plan
from xllm_cli.hub import push_folder
from xllm_cli.models import compute_dtype, load_tokenizer, model_settings, open_model, resolve_model
from xllm_cli.registry import load
from xllm_cli.settings.config import XllmConfig

INSTALL_HINT = "pip install 'xllm-cli[gptq]'"
BACKEND_MODULES = ("gptqmodel", "optimum")  # optimum: transformers needs it to load a GPTQ checkpoint
HELD_OUT_MAX = 64  # samples kept out of calibration to measure perplexity
QUALITY_FILE = "quality.json"


def require_backend() -> None:
    """One line saying what to install when the GPTQ extra is missing (checked before any heavy work)."""
    for name in BACKEND_MODULES:
        try:
            found = sys.modules.get(name, True) is not None and importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise XllmError(f"xllm quantize needs the GPTQ backend ('{name}' is not installed): {INSTALL_HINT}")


def calibration_samples(config: XllmConfig) -> Iterator[dict]:
    """Training samples ({"text_parts"} or {"messages"}) of the calibration source."""

    source = config.quantization_dataset_id
    if source:
        if looks_like_path(source) and not Path(source).expanduser().exists():
            raise ConfigError(f"--quantization-dataset-id: no such file or folder: {source}")
        train, _ = read_source(source, config, config.dataset_text_field)
        for where, record in train:
            yield general_sample(where, record, config.dataset_text_field, config.dataset_parts_separator)
        return

    path = Path(config.train_local_path_to_data)
    if not path.is_file() and config.prepare_dataset:
        console.info(f"calibration: {path} is missing, preparing dataset '{config.dataset_key}' first")
        prepare_dataset(config)
    dataset = load("datasets", config.dataset_key)(config)
    console.info(f"calibration: samples of the prepared train data {path} (dataset '{config.dataset_key}')")
    for raw in read_prepared(path, "quantize"):
        yield dataset.get_sample(raw)


def encode(sample: dict, tokenizer: Any, config: XllmConfig) -> list[int]:
    """A training sample as the token ids the model sees: text parts joined, chat rendered by its template."""
    if "text_parts" in sample:
        text, special = config.collator_parts_separator.join(sample["text_parts"]), True
    elif getattr(tokenizer, "chat_template", None):
        text, special = tokenizer.apply_chat_template(sample["messages"], tokenize=False), False  # has BOS itself
    else:
        text, special = "\n".join(m["content"] for m in sample["messages"]), True
    return tokenizer(text, add_special_tokens=special, truncation=True, max_length=config.max_length)["input_ids"]


def calibration_ids(config: XllmConfig, tokenizer: Any) -> tuple[list[list[int]], list[list[int]]]:
    """(calibration, held-out) token ids: up to ``quantization_max_samples`` plus a few held out for perplexity."""
    wanted = config.quantization_max_samples + HELD_OUT_MAX
    texts: list[list[int]] = []
    for sample in calibration_samples(config):
        ids = encode(sample, tokenizer, config)
        if len(ids) >= 2:
            texts.append(ids)
        if len(texts) >= wanted:
            break
    if len(texts) < 2:
        raise DataError(f"calibration needs at least 2 non-empty samples, the source has {len(texts)}")
    held_out = min(HELD_OUT_MAX, max(1, len(texts) // 10))
    return texts[:-held_out][: config.quantization_max_samples], texts[-held_out:]


@contextlib.contextmanager
def backend_output() -> Iterator[Path | None]:
    """gptqmodel prints banners, tables and bars on stdout: keep them in a log file unless --verbose."""
    if console.verbose():
        yield None
        return
    import logging

    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    # Loading and shard-writing bars and the tokenizer-fixing notes say nothing a user can act on here.
    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    logging.getLogger("tokenicer").setLevel(logging.WARNING)
    with tempfile.NamedTemporaryFile("w", prefix="xllm-gptq-", suffix=".log", delete=False) as log:
        try:
            with contextlib.redirect_stdout(log):
                yield Path(log.name)
        except BaseException:
            console.warn(f"the GPTQ backend's output is in {log.name}")
            raise
    os.unlink(log.name)


def run_gptq(
    config: XllmConfig, model_path: Path, tokenizer: Any, samples: list[list[int]], output: Path, layers: int | None
) -> None:
    """Quantize with gptqmodel, layer by layer (progress per layer), and save the packed checkpoint to ``output``."""
    import torch

    # gptqmodel's CPU worker pool: its default is a single worker on a 2-core machine, which stalls quantization.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, min(12, ((os.cpu_count() or 2) + 1) // 2))))
    with backend_output():
        from gptqmodel import GPTQModel, QuantizeConfig

        settings = QuantizeConfig(bits=config.gptq_bits, group_size=config.gptq_group_size, offload_to_disk=False)
        device = None if torch.cuda.is_available() else "cpu"
        model = GPTQModel.load(str(model_path), settings, device=device, trust_remote_code=config.trust_remote_code)
    calibration = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in samples]
    console.info(f"GPTQ: {config.gptq_bits}-bit, group size {config.gptq_group_size}, {len(samples)} samples")
    with progress("quantize", total=layers, unit="layers") as advance:
        done: set[int] = set()

        def layer_done(layer_idx: int, submodule_finalized: bool) -> None:
            if layer_idx not in done:  # gptqmodel may report a layer more than once
                done.add(layer_idx)
                advance()

        model.layer_callback = layer_done
        with backend_output(), _backend_stats_outside_cwd():
            model.quantize(calibration, batch_size=1, tokenizer=tokenizer)
            model.save(str(output))
    del model


@contextlib.contextmanager
def _backend_stats_outside_cwd() -> Iterator[None]:
    """gptqmodel writes per-module statistics to ``./logs/`` of whatever folder the user is in; keep them in a
    temporary folder instead of littering the user's project."""
    try:
        from gptqmodel.looper import loop_processor
    except ImportError:  # another gptqmodel layout: nothing to redirect
        yield
        return
    with tempfile.TemporaryDirectory(prefix="xllm-gptq-stats-") as folder:
        previous = loop_processor._PROJECT_LOG_DIR
        loop_processor._PROJECT_LOG_DIR = Path(folder)
        try:
            yield
        finally:
            loop_processor._PROJECT_LOG_DIR = previous


def perplexity(model: Any, samples: list[list[int]]) -> tuple[float, int]:
    """exp(mean next-token loss) over ``samples``; returns (perplexity, tokens scored)."""
    import torch

    device = next(model.parameters()).device
    total_loss, tokens = 0.0, 0
    with torch.no_grad():
        for ids in samples:
            batch = torch.tensor([ids], device=device)
            loss = model(input_ids=batch, labels=batch).loss.float().item()
            total_loss += loss * (len(ids) - 1)
            tokens += len(ids) - 1
    return math.exp(total_loss / tokens), tokens


def measure_quality(
    config: XllmConfig, model_path: Path, quantized: Path, held_out: list[list[int]], model_type: str
) -> dict:
    """Perplexity of the unquantized and the quantized model on the held-out samples, both loaded by plain
    transformers; the quantized one must load with exactly its weights (gptq_support.load_back)."""
    import torch

    console.step(f"loading the quantized model back and measuring perplexity on {len(held_out)} held-out samples")
    device_map = "auto" if torch.cuda.is_available() else None
    results: dict[str, Any] = {}
    with backend_output():
        model = load_back(quantized, model_type, config, device_map=device_map)
        results["perplexity_quantized"], results["tokens"] = perplexity(model.eval(), held_out)
        del model
        model = open_model(model_path, config, compute_dtype(config), device_map=device_map)
        results["perplexity_unquantized"], _ = perplexity(model.eval(), held_out)
        del model
    before, after = results["perplexity_unquantized"], results["perplexity_quantized"]
    results.update(
        relative_increase=after / before - 1,
        held_out_samples=len(held_out),
        source=config.quantization_dataset_id or str(config.train_local_path_to_data),
        bits=config.gptq_bits,
        group_size=config.gptq_group_size,
    )
    return results


def resolve_model_and_plan(config: XllmConfig) -> tuple[Path, Any]:
    """The model's folder (downloaded when a hub id) and the GPTQ plan for it; refuses, before any work, a quantized
    model, an architecture transformers could not load back quantized, and a group size that does not fit."""

    folder = resolve_model(config)
    name = config.model_name_or_path
    if model_settings(folder, name).get("quantization_config"):
        raise ConfigError(f"--model-name-or-path {name} is already quantized; give the full-precision (fused) model")
    with backend_output():  # importing gptqmodel prints its banner
        gptq_plan = plan(folder, config)
    check_group_size(config.gptq_group_size, gptq_plan.widths)
    return folder, gptq_plan


def check_quality(quality: dict, limit: float, model_type: str, staging: Path, output: Path) -> None:
    """Past the perplexity limit, the result is kept beside the output as ``<output>.rejected`` (quantizing a large
    model takes hours; the user may inspect it or accept it), never at the output path itself."""
    if quality["relative_increase"] <= limit:
        return
    import shutil

    rejected = output.parent / f"{output.name}.rejected"
    shutil.rmtree(rejected, ignore_errors=True)
    staging.rename(rejected)
    raise XllmError(
        f"quantize: {model_type}: perplexity rose {100 * quality['relative_increase']:+.1f}% "
        f"({quality['perplexity_unquantized']:.3f} -> {quality['perplexity_quantized']:.3f}), past "
        f"--quantization-max-perplexity-increase {limit:g}; the result is kept in {rejected}",
        hint="try more --gptq-bits, a smaller --gptq-group-size or more calibration samples, or raise the limit",
    )


def quantize(config: XllmConfig) -> Path:
    """GPTQ-quantize ``model_name_or_path`` into ``quantized_model_path``; report perplexity; push when asked."""
    require_backend()

    model_path, gptq_plan = resolve_model_and_plan(config)
    tokenizer_source = config.tokenizer_name_or_path or model_path
    tokenizer = load_tokenizer(config, tokenizer_source, for_training=False)
    samples, held_out = calibration_ids(config, tokenizer)
    output = Path(config.quantized_model_path).expanduser()
    with staged_folder(output) as staging:
        try:
            run_gptq(config, model_path, tokenizer, samples, staging, gptq_plan.layers)
        except XllmError:
            raise
        except Exception as error:
            first_line = errors.first_line(error)
            raise XllmError(
                f"GPTQ quantization of {gptq_plan.model_type} failed: {type(error).__name__}: {first_line}"
            ) from error
        fuse_split_pairs(staging, gptq_plan.split_pairs, config.gptq_bits)
        tokenizer.save_pretrained(staging)
        quality = measure_quality(config, model_path, staging, held_out, gptq_plan.model_type)
        (staging / QUALITY_FILE).write_text(json.dumps(quality, indent=2) + "\n")
        check_quality(quality, config.quantization_max_perplexity_increase, gptq_plan.model_type, staging, output)
    console.info(
        f"perplexity on {quality['held_out_samples']} held-out samples ({quality['tokens']} tokens): "
        f"{quality['perplexity_unquantized']:.3f} unquantized -> {quality['perplexity_quantized']:.3f} "
        f"quantized ({100 * quality['relative_increase']:+.1f}%), saved in {output / QUALITY_FILE}"
    )
    console.info(f"quantized model: {output}")
    if config.quantized_hub_model_id:
        push_folder(
            output,
            config.quantized_hub_model_id,
            private=config.quantized_hub_private_repo,
            token=config.secret("huggingface_hub_token"),
            commit_message=f"xllm quantize: GPTQ {config.gptq_bits}-bit",
            flag="--quantized-hub-model-id",
        )
    return output
