"""LoHA (LyCORIS `loha`): the weight change is the elementwise (Hadamard) product of two low-rank products,
`(alpha / dim) (w1_a w1_b) * (w2_a w2_b)`. Options and defaults are LyCORIS' own."""

from sidestep.adapters.lycoris_family import LycorisAdapter


class Loha(LycorisAdapter):
    name, label, algo = "loha", "LoHA", "loha"
    experimental = True
    options = ("loha_linear_dim", "loha_linear_alpha", "loha_use_tucker", "loha_use_scalar", "loha_weight_decompose")
    resume_options = options

    @classmethod
    def settings(cls, config):
        return dict(linear_dim=config.loha_linear_dim, linear_alpha=config.loha_linear_alpha,
                    use_tucker=config.loha_use_tucker, use_scalar=config.loha_use_scalar,
                    weight_decompose=config.loha_weight_decompose)

    @classmethod
    def lycoris_kwargs(cls, s):
        return dict(linear_dim=s["linear_dim"], linear_alpha=s["linear_alpha"], use_tucker=s["use_tucker"],
                    use_scalar=s["use_scalar"], dora_wd=s["weight_decompose"])

    @classmethod
    def summary(cls, config):
        return f"LoHA (LyCORIS) dim {config.loha_linear_dim}, alpha {config.loha_linear_alpha}"
