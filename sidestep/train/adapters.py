"""Former home of the adapters; they live in `sidestep.adapters` (one module per kind). Kept so existing imports
work."""

from sidestep.adapters import (KINDS, Adapter, build_adapter, candidate_modules, load_adapter,  # noqa: F401
                               select_target_modules, short_target_names)
from sidestep.adapters.lokr import Lokr
from sidestep.adapters.lora import Lora as LoraAdapter  # noqa: F401


def LokrAdapter(decoder, modules, linear_dim, linear_alpha, factor=-1,  # noqa: N802
                decompose_both=False, use_tucker=False, use_scalar=False, weight_decompose=False):
    """LoKR with the LyCORIS options by name (as `Lokr.settings` names them)."""
    return Lokr(decoder, modules, dict(linear_dim=linear_dim, linear_alpha=linear_alpha, factor=factor,
                                       decompose_both=decompose_both, use_tucker=use_tucker, use_scalar=use_scalar,
                                       weight_decompose=weight_decompose))
