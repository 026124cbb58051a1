"""4-bit frozen base (QLoRA-style): the decoder's block linears become bitsandbytes nf4 layers.

Only the frozen weights are quantized; the LoRA matrices PEFT adds on top stay in full precision
and the saved adapter is the same file as without quantization.
"""

from __future__ import annotations

import torch

from sidestep.errors import SidestepError


def quantize_base(decoder: torch.nn.Module, mode: str, device: torch.device, adapter_type: str) -> int:
    """Replace every Linear inside the decoder blocks by an nf4 Linear4bit; returns how many."""
    if mode == "none":
        return 0
    if device.type != "cuda":
        raise SidestepError(f"--quantize-base {mode} needs a CUDA GPU (bitsandbytes 4-bit kernels); this run is on "
                            f"{device.type}: drop --quantize-base")
    from sidestep.adapters import KINDS, kind

    if not kind(adapter_type).quantized_base:
        able = ", ".join(k.name for k in KINDS.values() if k.quantized_base)
        raise SidestepError(f"--quantize-base {mode} works with --adapter-type {able} only (PEFT LoRA knows 4-bit "
                            f"base layers; {kind(adapter_type).label} does not)")
    try:
        import bitsandbytes as bnb
    except Exception as err:  # broken CUDA setups raise OSError/RuntimeError on import
        raise SidestepError(f"--quantize-base {mode}: bitsandbytes cannot load ({err})") from None
    count = 0
    for block in decoder.layers:
        for name, module in list(block.named_modules()):
            for child_name, child in list(module.named_children()):
                if type(child) is not torch.nn.Linear:
                    continue
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.bfloat16, quant_type="nf4", device="cpu")
                q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(module, child_name, q.to(device))  # quantizes on the move to the GPU
                count += 1
    return count
