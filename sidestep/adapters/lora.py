"""LoRA (PEFT): `W + (alpha / r) B A` on the selected attention projections (docs/design.md §6.1)."""

from sidestep.adapters.peft_family import PeftAdapter


class Lora(PeftAdapter):
    name, label = "lora", "LoRA"
