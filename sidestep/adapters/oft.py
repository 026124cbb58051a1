"""OFT (LyCORIS `diag-oft`): a block-diagonal orthogonal rotation of each weight's output rows,
`R = (I + Q)(I - Q)^-1`, `Q = blocks - blocks^T`. Options and defaults are LyCORIS' own."""

import torch

from sidestep.adapters.lycoris_family import LycorisAdapter


class Oft(LycorisAdapter):
    name, label, algo = "oft", "OFT", "diag-oft"
    experimental = True
    options = ("oft_block_size", "oft_constraint", "oft_rescaled")
    resume_options = options

    @classmethod
    def settings(cls, config):
        return dict(block_size=config.oft_block_size, constraint=config.oft_constraint, rescaled=config.oft_rescaled)

    @classmethod
    def lycoris_kwargs(cls, s):
        # LyCORIS takes OFT's block size as linear_dim; its alpha is unused by OFT
        return dict(linear_dim=s["block_size"], constraint=s["constraint"], rescaled=s["rescaled"])

    @classmethod
    def meta_kwargs(cls, kwargs):
        return dict(kwargs, constraint=0.0)  # the norm bound compares a value; shapes do not depend on it

    @classmethod
    def summary(cls, config):
        return f"OFT (LyCORIS) block size {config.oft_block_size}, constraint {config.oft_constraint:g}" + \
            (", rescaled" if config.oft_rescaled else "")

    @classmethod
    def comfyui_refusal(cls, s):
        if s.get("rescaled"):
            return "trained with --oft-rescaled; ComfyUI ignores OFT's rescale vector: export without it"
        return None

    @classmethod
    def comfyui_fix(cls, tensors, s):
        """LyCORIS bounds ||Q|| by constraint x out_dim and stores the bare constraint as `.alpha`; ComfyUI bounds
        it by `.alpha` itself, so the file gets the product."""
        out = dict(tensors)
        for key, blocks in tensors.items():
            if key.endswith(".oft_blocks"):
                out[key[:-len("oft_blocks")] + "alpha"] = torch.tensor(float(s["constraint"]) * blocks.shape[0]
                                                                       * blocks.shape[1])
        return out
