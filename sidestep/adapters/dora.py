"""DoRA (PEFT `use_dora`): LoRA's direction change with a trained magnitude per output row.

`W' = m * (W + (alpha / r) B A) / ||W + (alpha / r) B A||` (row norms). Same folder as LoRA, with
`use_dora: true` in adapter_config.json and the magnitude vectors as
`base_model.model.<module>.lora_magnitude_vector` (docs/design.md §6.1).
"""

from sidestep.adapters.base import base_weights, comfyui_dora_scale
from sidestep.adapters.peft_family import COMFY_PREFIX, PEFT_PREFIX, WEIGHTS, PeftAdapter


class Dora(PeftAdapter):
    name, label = "dora", "DoRA"
    use_dora = True
    quantized_base = False  # the magnitude needs the full-precision weight norms

    @classmethod
    def comfyui_tensors(cls, folder):
        """LoRA's keys plus `<module>.dora_scale` [out, 1]. ComfyUI divides the adapted weight by the norm of the
        *base* weight rows (+ fp32 eps) where PEFT divides by the adapted rows' norm, so the magnitude is written
        as m (||W|| + eps) / ||W + scale B A||: both then give m (W + scale B A) / ||W + scale B A||. That needs
        the base weights: they come from the model named in the folder's sidestep_run.json."""
        from safetensors.torch import load_file

        out, header = super().comfyui_tensors(folder)
        magnitudes = {k[len(PEFT_PREFIX):-len(".lora_magnitude_vector")]: v
                      for k, v in load_file(folder / WEIGHTS).items() if k.endswith(".lora_magnitude_vector")}
        weights = base_weights(folder, sorted(magnitudes))
        for module, magnitude in magnitudes.items():
            key = COMFY_PREFIX + module
            down, up = out[f"{key}.lora_A.weight"].float(), out[f"{key}.lora_B.weight"].float()
            scale = out[f"{key}.alpha"].item() / down.shape[0]  # what ComfyUI will apply
            adapted = weights[module] + scale * (up @ down)
            out[f"{key}.dora_scale"] = comfyui_dora_scale(magnitude, weights[module], adapted)
        return out, header
