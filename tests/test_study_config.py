"""The study's configuration checks: seeds, faithful heads, the recall benchmark's variants
(FLOP-matched at load time) and the model-size entries, each refused with its key path."""
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
import pipeline_config  # noqa: E402
from pipeline_config import ConfigError, check_config  # noqa: E402
from test_faults import DELETE, broken  # noqa: E402

import baselines  # noqa: E402


def test_a_schedule_with_more_rate_than_heads_is_refused_naming_the_uncovered_branches():
    config = broken({"variants.2.params": {"segment_lengths": [32, 64, 128],
                                           "dilation_rates": [1, 2, 8]}})
    with pytest.raises(ConfigError) as error:
        check_config(config, local=False)
    message = str(error.value)
    assert "variants[2].params" in message
    assert "(w=128, r=8): 50%" in message  # 4 heads cover offsets 0-3 of 8
    assert "allow_uncovered_offsets" in message
    allowed = broken({"variants.2.params": {"segment_lengths": [32, 64, 128],
                                            "dilation_rates": [1, 2, 8]},
                      "variants.2.allow_uncovered_offsets": True})
    check_config(allowed, local=False)


def test_the_shipped_configurations_cover_every_offset():
    for name in ("default", "cpu_full", "smoke"):
        config = pipeline_config.read_config(name)
        pipeline_config.check_schema(config)
        for variant in config["variants"]:
            assert not variant["allow_uncovered_offsets"], (name, variant)


@pytest.mark.parametrize("changes, key, text", [
    ({"seeds": [0, 0]}, "seeds", "unique"),
    ({"seeds": []}, "seeds", ""),
    ({"recall.variants.1.flop_match": "blocks"}, "recall.variants[1].flop_match", "blocks"),
    ({"recall.variants.0.name": "nope"}, "recall.variants[0].name", "unknown variant"),
    ({"recall.distances": [4, 40]}, "recall.distances", "2 .. 31"),
    ({"recall.batch": 6}, "recall.batch", "multiple of 4"),
    ({"recall.task.pairs": 20}, "recall.task", "pairs"),
    ({"recall.model.n_head": 3}, "recall.model", "n_head"),
    ({"recall.variants.2.params": {"segment_lengths": [8, 16], "dilation_rates": [1, 8]}},
     "recall.variants[2].params", "uncovered"),
    ({"recall.steps": DELETE}, "recall", "steps"),
])
def test_bad_study_settings_are_refused_with_their_key_path(changes, key, text):
    with pytest.raises(ConfigError) as error:
        check_config(broken(changes), local=False)
    assert f"'{key}" in str(error.value) and text in str(error.value), str(error.value)


def test_flop_match_picks_the_knob_whose_flops_are_nearest_longnets():
    config = pipeline_config.read_config("default")
    pipeline_config.check_schema(config)
    recall = config["recall"]
    variants = pipeline_config.recall_variants(config)
    heads = recall["model"]["n_head"]
    head_dim = recall["model"]["d_model"] // heads
    n = recall["seq_len"]

    def flops(name, params):
        return baselines.build(name, num_heads=heads, **params).flops(n, head_dim, causal=True)

    target = flops("longnet", variants["longnet"]["params"])
    for vid in ("sparse_fixed", "sparse_strided", "longformer"):
        entry = variants[vid]
        knob = entry["flop_match"]
        chosen = entry["params"][knob]
        gap = abs(flops(entry["name"], entry["params"]) - target)
        for other in (chosen - 1, chosen + 1):
            try:
                assert gap <= abs(flops(entry["name"], {**entry["params"], knob: other}) - target)
            except ValueError:  # a neighbour the variant does not accept
                pass
    assert variants["vanilla"]["params"] == {}


def test_model_overrides_give_an_entry_its_own_model_and_parameter_count():
    config = broken({"variants": [*yaml.safe_load(yaml.safe_dump(broken({})["variants"])),
                                  {"name": "longnet", "id": "wide", "train_lens": [128],
                                   "params": {"segment_lengths": [32, 64, 128],
                                              "dilation_rates": [1, 2, 4]},
                                   "model_overrides": {"d_model": 64}, "profile": False}]})
    variants = check_config(config, local=False)
    cfg = pipeline_config.train_config(config, variants["wide"], 128, "cpu", 1)
    assert cfg["model_overrides"]["d_model"] == 64 and cfg["seed"] == 1
    counts = pipeline_config.model_params(config, variants)
    assert counts["wide"] > counts["longnet"]


@pytest.mark.parametrize("name", ["default", "cpu_full"])
def test_figure7_right_scored_tokens_reach_the_prompt_in_every_model(name):
    """Figure 7 right measures use of the prompt only if the model's own pattern, as trained,
    connects every scored position to the prompt's first token within the model's depth: read
    from the pattern itself (analysis.attention_graph) for every trained model and every prompt
    length it is scored at (longnet.evaluate.context_prompts). The study configurations only:
    smoke's one-layer toy cannot relay through a Sparse Transformer summary."""
    from analysis.attention_graph import reach_layers
    from longnet.evaluate import context_prompts
    from longnet.model import ModelConfig

    config = pipeline_config.read_config(name)
    variants = check_config(config, local=False)
    window = config["evaluation"]["context_window"]
    checked = 0
    for variant in variants.values():
        for train_len in variant["train_lens"]:
            cfg = pipeline_config.train_config(config, variant, train_len, "cpu", 0)
            model = ModelConfig.from_size(cfg["model"], **cfg.get("model_overrides", {}),
                                          attention=cfg["attention"],
                                          attention_params=cfg["attention_params"])
            attn = baselines.build(model.attention, num_heads=model.n_head, **model.attention_params)
            prompts = [p for p in context_prompts(window["prompt_lens"], window["n_final"], train_len) if p]
            assert prompts, (variant["id"], train_len)  # at least one prompt beyond none
            for prompt in prompts:
                length = prompt + window["n_final"]
                # from each scored position back to position 0 (reach_layers walks query -> key)
                layers = reach_layers(attn.pattern(length), torch.arange(prompt, length))[:, 0]
                assert (layers <= model.n_layer).all(), (variant["id"], train_len, prompt)
                checked += 1
    assert checked >= len(variants)
