"""Gradient sensitivity of every attention projection: where does the loss pull hardest?

score(m) = (1/N) * sum over N batches of ||dL_b / dW_m||_F^2 / numel(W_m)

L_b is the corrected ("fixed") training loss of batch b: the same CFG dropout and timestep
sampling as training, so the score reflects what training would do. Only the candidate
weights take gradients, each gradient is reduced to its squared norm and freed as soon as
it is complete (a post-accumulate hook), and gradient checkpointing stays on: estimation
fits wherever training fits.
"""

from __future__ import annotations

import gc
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from sidestep import __version__
from sidestep.config import Config
from sidestep.data.batching import LATENT_RATE, BucketBatchSampler
from sidestep.data.dataset import PreprocessedDataset, pad_collate
from sidestep.data.manifest import check_made_for
from sidestep.errors import SidestepError
from sidestep.io import atomic_write_text
from sidestep.model import discovery
from sidestep.model.keys import decoder_path_to_official
from sidestep.model.attention import use_fast_attention
from sidestep.model.checkpointing import enable_checkpointing
from sidestep.model.loader import load_model_dit
from sidestep.adapters import select_target_modules
from sidestep.train.objective import Objective, flow_matching_loss, sample_generators
from sidestep.runtime import resolve_runtime


@dataclass
class Estimate:
    scores: dict[str, float]  # ACE-Step module name -> score, highest first
    top_k: list[str]
    document: dict[str, Any]  # what goes into the JSON


def sensitivity_scores(decoder: torch.nn.Module, modules: list[str], batches: list[dict[str, torch.Tensor]],
                       objective: Objective, null_condition_emb: torch.Tensor, seed: int,
                       checkpointing: tuple[float, str] | None = (1.0, "full")) -> dict[str, float]:
    """Mean squared gradient norm per weight element of each module in `modules` (diffusers names).
    `checkpointing`: (ratio, policy) as training's, or None for none."""
    decoder.requires_grad_(False)
    weights = {name: decoder.get_submodule(name).weight for name in modules}
    totals = {name: 0.0 for name in modules}
    hooks = []
    for name, weight in weights.items():
        weight.requires_grad_(True)

        def reduce_and_free(param, name=name):
            totals[name] += param.grad.detach().float().square().sum().item() / param.numel()
            param.grad = None

        hooks.append(weight.register_post_accumulate_grad_hook(reduce_and_free))
    if checkpointing:
        enable_checkpointing(decoder, *checkpointing)
    decoder.train()
    try:
        for b, batch in enumerate(batches):
            generators = sample_generators(seed, b, batch["index"].tolist(), batch["target_latents"].device)
            inputs = {k: v for k, v in batch.items() if k != "index"}
            loss, _ = flow_matching_loss(decoder, inputs, objective, generators, null_condition_emb,
                                         input_requires_grad=checkpointing is not None)
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
        for weight in weights.values():
            weight.requires_grad_(False)
            weight.grad = None
    return {name: total / len(batches) for name, total in totals.items()}


def estimate_batches(config: Config, dataset: PreprocessedDataset) -> Iterator[dict[str, torch.Tensor]]:
    """Training's batches (distinct songs of one length, `--chunk-duration` crops), epoch after epoch."""
    chunk = round(config.chunk_duration * LATENT_RATE) if config.chunk_duration > 0 else None
    sampler = BucketBatchSampler(dataset.lengths, config.batch_size, config.seed, chunk)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_collate)
    for epoch in itertools.count():  # small datasets are cycled
        sampler.set_epoch(epoch)
        yield from loader


def _batches(config: Config, dataset: PreprocessedDataset, device: torch.device, dtype: torch.dtype
             ) -> list[dict[str, torch.Tensor]]:
    batches: list[dict[str, torch.Tensor]] = []
    if config.estimate_batches:
        for batch in estimate_batches(config, dataset):
            batches.append({k: v.to(device, dtype if v.is_floating_point() else None) for k, v in batch.items()})
            if len(batches) == config.estimate_batches:
                break
    return batches


def estimate(config: Config) -> Estimate:
    """Score every candidate module on `config.dataset_dir` and write the module config JSON."""
    for flag, value in (("--checkpoint-dir", config.checkpoint_dir), ("--dataset-dir", config.dataset_dir)):
        if not value:
            raise SidestepError(f"estimate: pass {flag}")
    runtime = resolve_runtime(config.device, config.precision)
    torch.manual_seed(config.seed)
    model = discovery.model_to_train(config)
    dataset = PreprocessedDataset(config.dataset_dir)
    check_made_for(dataset.manifest, model.entry)
    if len(dataset) == 0:
        raise SidestepError(f"{config.dataset_dir}: the dataset holds no samples; preprocess some audio first")
    dit = load_model_dit(model.entry, device=runtime.device, dtype=runtime.compute_dtype)
    decoder, null_emb = dit.transformer, dit.null_condition_emb.detach().clone()
    del dit
    gc.collect()
    use_fast_attention(decoder, runtime.device)
    modules = select_target_modules(decoder, config.attention_type, config.target_modules)
    objective = Objective("fixed", model.timestep_mu, model.timestep_sigma, config.cfg_ratio)
    with torch.autocast(runtime.device.type, dtype=runtime.compute_dtype, enabled=runtime.precision != "fp32"):
        raw = sensitivity_scores(decoder, modules, _batches(config, dataset, runtime.device, runtime.compute_dtype),
                                 objective, null_emb, config.seed,
                                 (config.gradient_checkpointing_ratio, config.checkpointing_policy)
                                 if config.gradient_checkpointing else None)
    ranked = sorted(raw.items(), key=lambda kv: (-kv[1], kv[0]))
    scores = {decoder_path_to_official(name): value for name, value in ranked}
    top = list(scores)[: config.top_k]
    document = {
        "sidestep_version": __version__,
        "definition": "mean over batches of ||dL/dW||_F^2 / numel(W), corrected training loss",
        "modules": {name: {"score": value, "rank": i + 1} for i, (name, value) in enumerate(scores.items())},
        "top_k": top,
        "settings": {"model_variant": model.entry.name, "estimate_batches": config.estimate_batches,
                     "batch_size": config.batch_size,
                     "chunk_duration": config.chunk_duration, "seed": config.seed, "cfg_ratio": config.cfg_ratio,
                     "attention_type": config.attention_type, "target_modules": list(config.target_modules),
                     "precision": runtime.precision, "top_k": config.top_k},
        "dataset": {"path": str(Path(config.dataset_dir).resolve()), "num_samples": len(dataset),
                    "fingerprint": dataset.manifest.fingerprint()},
    }
    try:
        atomic_write_text(Path(config.output), json.dumps(document, indent=2))
    except OSError as err:
        raise SidestepError(f"{config.output}: cannot write ({err.strerror or err}); choose a writable --output") \
            from None
    return Estimate(scores=scores, top_k=top, document=document)


def read_module_config(path: str | Path) -> tuple[list[str], dict[str, float]]:
    """(top-k module names, all scores) of a module config JSON; bad files are one-line errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        top = data["top_k"]
        modules = data.get("modules", {})
        if not (isinstance(top, list) and top and all(isinstance(m, str) for m in top)):
            raise TypeError
        scores = {name: float(info["score"]) for name, info in modules.items()}
    except FileNotFoundError:
        raise SidestepError(f"{path}: not found; create it with train.py estimate") from None
    except (OSError, ValueError, RecursionError, OverflowError, KeyError, TypeError, AttributeError):
        raise SidestepError(f"{path}: not a module config (needs a non-empty 'top_k' list of module names and "
                            "'modules' with scores); create it with train.py estimate") from None
    return top, scores
