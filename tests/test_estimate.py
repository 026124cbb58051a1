"""Gradient-sensitivity estimation, selective training and config comparison."""

import json

import pytest
import torch

from helpers import write_tensor_dataset
from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.data.batching import BucketBatchSampler
from sidestep.data.dataset import PreprocessedDataset, pad_collate
from sidestep.errors import SidestepError
from sidestep.estimate.compare import jaccard, per_layer_counts, spearman
from sidestep.estimate.sensitivity import estimate
from sidestep.model.keys import decoder_path_to_diffusers
from sidestep.model.loader import load_dit
from sidestep.train.objective import Objective, flow_matching_loss, sample_generators
from sidestep.train.recipe import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tensor_dataset(tmp_path_factory.mktemp("est") / "ds", n=5)  # 24 30 36 27 33 frames


def _config(root, dataset, tmp_path, **changes):
    base = dict(checkpoint_dir=str(root), dataset_dir=str(dataset), output=str(tmp_path / "module_config.json"),
                estimate_batches=3, top_k=5, seed=11)
    base.update(changes)
    return Config(**base)


@pytest.mark.parametrize("chunk_duration", [0.0, 1.0])
def test_scores_equal_an_independent_gradient_computation(tiny_root_readonly, dataset, tmp_path, chunk_duration):
    result = estimate(_config(tiny_root_readonly, dataset, tmp_path, batch_size=2, estimate_batches=4,
                              chunk_duration=chunk_duration))
    doc = json.loads((tmp_path / "module_config.json").read_text())
    assert len(doc["modules"]) == 32 and doc["top_k"] == result.top_k and len(result.top_k) == 5
    assert [doc["modules"][m]["rank"] for m in result.top_k] == [1, 2, 3, 4, 5]
    assert doc["dataset"]["num_samples"] == 5 and doc["settings"]["estimate_batches"] == 4

    # independently: training's batches (2 distinct songs cropped to one length, 3 per epoch, so the 4th batch is
    # the next epoch's first), plain autograd on the plain mean, no checkpointing
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    decoder = dit.transformer
    names = list(doc["modules"])
    weights = [decoder.get_submodule(decoder_path_to_diffusers(n)).weight.requires_grad_(True) for n in names]
    data = PreprocessedDataset(dataset)
    sampler = BucketBatchSampler(data.lengths, 2, seed=11, chunk=25 if chunk_duration else None)
    keys = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        keys += list(sampler)
    totals = torch.zeros(len(names), dtype=torch.float64)
    for b, batch_keys in enumerate(keys[:4]):
        assert len({k[0] for k in batch_keys}) == len(batch_keys) and len({k[2] for k in batch_keys}) == 1
        batch = pad_collate([data[key[:3]] for key in batch_keys])
        assert batch["attention_mask"].all()  # no padding
        gens = sample_generators(11, b, batch.pop("index").tolist())
        loss, _ = flow_matching_loss(decoder, batch, Objective("fixed"), gens, dit.null_condition_emb)
        grads = torch.autograd.grad(loss, weights)
        totals += torch.tensor([g.double().square().sum().item() / g.numel() for g in grads])
    assert sorted(len(k) for k in keys[:3]) == [1, 2, 2]
    expected = totals / 4
    got = torch.tensor([doc["modules"][n]["score"] for n in names], dtype=torch.float64)
    assert torch.allclose(got, expected, rtol=1e-4, atol=0)
    assert (expected > 0).all()


def test_ranking_is_deterministic_for_a_seed(tiny_root_readonly, dataset, tmp_path):
    a = estimate(_config(tiny_root_readonly, dataset, tmp_path, output=str(tmp_path / "a.json")))
    b = estimate(_config(tiny_root_readonly, dataset, tmp_path, output=str(tmp_path / "b.json")))
    c = estimate(_config(tiny_root_readonly, dataset, tmp_path, output=str(tmp_path / "c.json"), seed=12))
    assert a.scores == b.scores and a.top_k == b.top_k
    assert a.scores != c.scores


def test_selective_trains_exactly_the_listed_modules(tiny_root_readonly, dataset, tmp_path):
    top = ["layers.0.self_attn.q_proj", "layers.2.cross_attn.o_proj", "layers.3.self_attn.v_proj"]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"top_k": top, "modules": {m: {"score": 1.0, "rank": i + 1}
                                                           for i, m in enumerate(top)}}))
    out = tmp_path / "out"
    code = main(["--plain", "-y", "selective", "--module-config", str(path), "--checkpoint-dir",
                 str(tiny_root_readonly), "--dataset-dir", str(dataset), "--output-dir", str(out), "--epochs", "1",
                 "--rank", "2", "--alpha", "4", "--num-workers", "0"])
    assert code == 0
    from safetensors.torch import load_file

    keys = load_file(out / "adapter_model.safetensors").keys()
    modules = {k[len("base_model.model."):].rsplit(".lora_", 1)[0] for k in keys}
    assert modules == set(top)
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(top)


def test_module_config_naming_missing_modules_is_listed(tiny_root_readonly, dataset, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"top_k": ["layers.0.self_attn.q_proj", "layers.40.self_attn.q_proj",
                                          "layers.1.mlp.up_proj"], "modules": {}}))
    with pytest.raises(SidestepError, match=r"2 module\(s\) this model lacks: layers\.40\.self_attn\.q_proj, "
                                            r"layers\.1\.mlp\.up_proj"):
        train(Config(checkpoint_dir=str(tiny_root_readonly), dataset_dir=str(dataset),
                     output_dir=str(tmp_path / "o"), num_workers=0),
              "fixed", only_modules=json.loads(path.read_text())["top_k"], quiet=True)
    path.write_text("{not json")
    assert main(["--plain", "-y", "selective", "--module-config", str(path), "--checkpoint-dir",
                 str(tiny_root_readonly), "--dataset-dir", str(dataset), "--output-dir", str(tmp_path / "o")]) == 2


def test_compare_configs_numbers(tmp_path, capsys):
    def write(name, scores, top):
        p = tmp_path / name
        p.write_text(json.dumps({"top_k": top, "modules": {m: {"score": s, "rank": 0} for m, s in scores.items()}}))
        return p

    mods = ["layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.1.cross_attn.v_proj",
            "layers.1.self_attn.o_proj"]
    a = write("a.json", dict(zip(mods, [4.0, 3.0, 2.0, 1.0])), mods[:2])
    b = write("b.json", dict(zip(mods, [1.0, 2.0, 3.0, 4.0])), [mods[3], mods[0]])
    assert jaccard(set(mods[:2]), {mods[3], mods[0]}) == pytest.approx(1 / 3)
    assert spearman(dict(zip(mods, [4.0, 3.0, 2.0, 1.0])), dict(zip(mods, [1.0, 2.0, 3.0, 4.0]))) == pytest.approx(-1)
    assert spearman({"x": 1.0, "y": 2.0, "z": 2.0}, {"x": 1.0, "y": 2.0, "z": 3.0}) == pytest.approx(0.8660254)
    assert main(["--plain", "compare-configs", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "0.333" in out and "-1.000" in out
    assert per_layer_counts(mods[:2]) == {0: 2} and per_layer_counts([mods[3], mods[0]]) == {0: 1, 1: 1}
    assert "Top-k modules per layer" in out
    assert main(["--plain", "compare-configs", str(a)]) == 2
