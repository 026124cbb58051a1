"""LoKR (LyCORIS `lokr`): the weight change is a Kronecker product of two small factors (docs/design.md §6.2)."""

from sidestep.adapters.lycoris_family import LycorisAdapter


class Lokr(LycorisAdapter):
    name, label, algo = "lokr", "LoKR", "lokr"
    experimental = True
    options = ("lokr_linear_dim", "lokr_linear_alpha", "lokr_factor", "lokr_decompose_both", "lokr_use_tucker",
               "lokr_use_scalar", "lokr_weight_decompose")
    resume_options = options
    extra_config = dict(full_matrix=False, bypass_mode=False, rs_lora=False, unbalanced_factorization=False)

    @classmethod
    def settings(cls, config):
        return dict(linear_dim=config.lokr_linear_dim, linear_alpha=config.lokr_linear_alpha, factor=config.lokr_factor,
                    decompose_both=config.lokr_decompose_both, use_tucker=config.lokr_use_tucker,
                    use_scalar=config.lokr_use_scalar, weight_decompose=config.lokr_weight_decompose)

    @classmethod
    def lycoris_kwargs(cls, s):
        return dict(linear_dim=s["linear_dim"], linear_alpha=s["linear_alpha"], factor=s["factor"],
                    decompose_both=s["decompose_both"], use_tucker=s["use_tucker"], use_scalar=s["use_scalar"],
                    dora_wd=s["weight_decompose"])

    @classmethod
    def summary(cls, config):
        return (f"LoKR (LyCORIS) dim {config.lokr_linear_dim}, alpha {config.lokr_linear_alpha}, "
                f"factor {config.lokr_factor}")
