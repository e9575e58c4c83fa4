"""``xllm --version``: xllm's version, its libraries' versions and the devices seen. Imported only for --version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from xllm_cli import __version__

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "deepspeed", "bitsandbytes", "gptqmodel")


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def devices() -> str:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"cuda x{len(names)}: " + ", ".join(names)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return f"cpu only ({torch.get_num_threads()} threads)"


def print_versions() -> None:
    print(f"xllm {__version__}")
    for name, found in library_versions().items():
        role = "  (GPTQ backend)" if name == "gptqmodel" else ""
        print(f"  {name:<13} {found}{role}")
    print(f"  devices       {devices()}")
