"""Transformers-native folders: what `save_pretrained` writes for a model transformers' MaskFormer represents,
proven as the Hub runs it (a process with transformers only, `pipeline()` without trust_remote_code, the
widget's request path: bytes and a URL), read back by our classes with every setting intact, and transformers'
own folders loaded by our classes, converted on the fly."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import re
import textwrap
import threading
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image
from transformers import DetrConfig, ResNetConfig, SwinConfig

from modeling_maskformer import (
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    MaskFormerImageProcessor,
    MaskFormerModel,
)
from modeling_maskformer.configuration.transformers_format import STASH_KEY
from modeling_maskformer.interop.hub import build_model_card

from builders import PACKAGE_BLOCKER, STAGES, random_targets, run_in_terminal, tiny_model
from numerics import SAME_GRAPH, assert_close

ROOT = Path(__file__).resolve().parents[1]
ID2LABEL = {0: "sky", 1: "circle", 2: "square"}
# Settings transformers has no field for: they must come back from the stash.
TRAINING = {"mask_loss_mode": "point", "focal_alpha": 0.3, "class_weight": 2.0, "train_num_points": 128}
# What a trained folder records about its data (modeling_maskformer/data/labels.py): the label convention in the
# processor's own fields, and which classes are things.
PROCESSOR = {
    "size": {"shortest_edge": 64, "longest_edge": 128},
    "do_reduce_labels": True,
    "ignore_index": 255,
}
THING_IDS = [1, 2]
DECODER = {
    "d_model": 32,
    "decoder_layers": 2,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 64,
    "num_queries": 10,
}
SWIN = {
    "embed_dim": 16,
    "depths": [1, 2, 1, 1],
    "num_heads": [1, 2, 2, 4],
    "window_size": 4,
    "image_size": 64,
}


def env(tmp_path) -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    folder = tmp_path_factory.mktemp("native")
    model = tiny_model(
        seed=1, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}, thing_ids=THING_IDS, **TRAINING
    ).eval()
    processor = MaskFormerImageProcessor(**PROCESSOR)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    build_model_card(model.config, repo_id=str(folder)).save(folder / "README.md")
    return model, processor, folder


def test_saved_folder_is_transformers_own(native):
    model, _, folder = native
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "maskformer" and "auto_map" not in config
    assert config["architectures"] == ["MaskFormerForInstanceSegmentation"]
    assert config[STASH_KEY]["mask_loss_mode"] == "point" and config[STASH_KEY]["use_auxiliary_loss"] is True
    assert (
        json.loads((folder / "preprocessor_config.json").read_text())["image_processor_type"]
        == "MaskFormerImageProcessor"
    )
    # transformers reads its own fields and keeps ours, warning nothing.
    tf_config = transformers.MaskFormerConfig.from_pretrained(folder)
    assert tf_config.decoder_config.d_model == 32 and getattr(tf_config, STASH_KEY)["focal_alpha"] == 0.3


def test_our_classes_load_it_back_with_every_setting(native):
    model, processor, folder = native
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(folder)
    ignore = {"_name_or_path", "dtype", "transformers_version", "architectures"}
    ours = {k: v for k, v in model.config.to_dict().items() if k not in ignore}
    back = {k: v for k, v in loaded.config.to_dict().items() if k not in ignore}
    ours["backbone_config"] = {k: v for k, v in ours["backbone_config"].items() if k not in ignore}
    back["backbone_config"] = {k: v for k, v in back["backbone_config"].items() if k not in ignore}
    assert back == ours
    before, after = model.state_dict(), loaded.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert MaskFormerImageProcessor.from_pretrained(folder).to_dict() == processor.to_dict()
    base = MaskFormerModel.from_pretrained(folder)
    assert all(torch.equal(value, before[f"model.{key}"]) for key, value in base.state_dict().items())


def train_steps(model, steps: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    mask_labels, class_labels = random_targets(2, 64, 64, seed=seed)
    losses = []
    for _ in range(steps):
        loss = model(pixel_values, mask_labels=mask_labels, class_labels=class_labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_train_save_load_continue_gives_the_same_losses(tmp_path):
    """Dropout 0.1, deep supervision and point-sampled losses (all random, all seeded): the reloaded model
    continues exactly as the original does."""
    model = tiny_model(seed=2, **TRAINING).train()
    train_steps(model, 2, seed=0)
    state = torch.random.get_rng_state()
    model.save_pretrained(tmp_path)
    assert torch.equal(torch.random.get_rng_state(), state)  # saving mid-run leaves the run's random numbers alone
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "maskformer"
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path).train()
    expected, got = train_steps(model, 3, seed=1), train_steps(loaded, 3, seed=1)
    assert got == expected
    assert len(set(expected)) == 3  # the steps did train


def test_hub_process_without_this_package_runs_the_pipeline(native, tmp_path):
    """transformers alone (our package blocked), as the Hub's widget: pipeline() with no trust_remote_code for
    the three subtasks, the image as a path, as request bytes and as a URL on 127.0.0.1; logits equal ours to
    float32 rounding (the same modules in the same order, computed in another process with another thread count,
    so another reduction order on some CPUs); the folder's label settings (thing_ids, do_reduce_labels) read by
    transformers itself."""
    model, processor, folder = native
    Image.new("RGB", (96, 64), (120, 30, 200)).save(tmp_path / "image.png")
    image = Image.open(tmp_path / "image.png")
    ours = processor(image, return_tensors="pt")
    torch.save(ours["pixel_values"], tmp_path / "pixel_values.pt")
    with torch.no_grad():
        expected = model(ours["pixel_values"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/image.png"
    script = PACKAGE_BLOCKER % {"root": str(ROOT)} + textwrap.dedent(f"""
        import torch
        from PIL import Image
        from transformers import pipeline
        try:
            import modeling_maskformer
            raise SystemExit("the package is importable: the test would prove nothing")
        except ModuleNotFoundError:
            pass
        segmenter = pipeline("image-segmentation", model={str(folder)!r})
        assert type(segmenter.model).__module__.startswith("transformers.models.maskformer"), type(segmenter.model)
        assert type(segmenter.image_processor).__name__ == "MaskFormerImageProcessor"
        assert segmenter.model.config.thing_ids == {THING_IDS!r}, segmenter.model.config.thing_ids
        assert segmenter.image_processor.do_reduce_labels is True and segmenter.image_processor.ignore_index == 255
        image = Image.open("image.png")
        inputs = segmenter.image_processor(image, return_tensors="pt")
        with torch.no_grad():
            outputs = segmenter.model(torch.load("pixel_values.pt"))
        torch.save({{"pixel_values": inputs["pixel_values"], "class": outputs.class_queries_logits,
                    "masks": outputs.masks_queries_logits}}, "theirs.pt")
        # The request body's bytes: decoded to PIL as the Hub's inference container does, and as base64 text.
        import base64, io
        data = open("image.png", "rb").read()
        for source in ("image.png", Image.open(io.BytesIO(data)), base64.b64encode(data).decode(), {url!r}):
            for subtask in ("semantic", "instance", "panoptic"):
                result = segmenter(source, subtask=subtask, threshold=0.0)
                assert isinstance(result, list) and all(set(r) >= {{"label", "mask"}} for r in result), (subtask, result)
                assert all(r["mask"].size == (96, 64) for r in result), subtask
        print("OK")
    """)
    try:
        status, output = run_in_terminal(script, env=env(tmp_path), cwd=tmp_path, timeout=240)
    finally:
        server.shutdown()
    assert status == 0 and "OK" in output, output[-4000:]
    assert "custom code" not in output, output[-4000:]
    theirs = torch.load(tmp_path / "theirs.pt")
    assert_close(theirs["class"], expected.class_queries_logits, atol=SAME_GRAPH, what="class logits, transformers")
    assert_close(theirs["masks"], expected.masks_queries_logits, atol=SAME_GRAPH, what="mask logits, transformers")
    # transformers' processor on this folder gives our pixel values (same settings, same arithmetic here).
    torch.testing.assert_close(theirs["pixel_values"], ours["pixel_values"], rtol=0, atol=1e-6)


def card_snippet(folder: Path) -> str:
    card = (folder / "README.md").read_text()
    return re.search(r"## Usage.*?```python\n(.*?)```", card, re.S).group(1)


def test_model_card_snippet_runs_as_written(native, tmp_path):
    _, _, folder = native
    snippet = card_snippet(folder)
    assert "trust_remote_code" not in snippet and str(folder) in snippet
    Image.new("RGB", (80, 64), (10, 200, 30)).save(tmp_path / "image.jpg")
    program = PACKAGE_BLOCKER % {"root": str(ROOT)} + snippet + "\nassert isinstance(segments, list)\nprint('OK')\n"
    status, output = run_in_terminal(program, env=env(tmp_path), cwd=tmp_path, timeout=240)
    assert status == 0 and "OK" in output, output[-4000:]


def test_what_transformers_cannot_represent_stays_remote_code(tmp_path, caplog):
    model = tiny_model(pre_norm=True)
    with caplog.at_level(logging.WARNING, logger="modeling_maskformer.interop.saving"):
        model.save_pretrained(tmp_path)
    lines = [r.getMessage() for r in caplog.records if "remote-code folder" in r.getMessage()]
    assert len(lines) == 1 and "pre_norm=True" in lines[0] and "\n" not in lines[0]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "maskformer-hf"
    assert (tmp_path / "modeling_maskformer.py").is_file()
    card = build_model_card(model.config, repo_id="me/x")
    assert "trust_remote_code=True" in card.text and "pre_norm=True" in card.text
    with pytest.raises(ValueError, match="pre_norm=True"):
        model.save_pretrained(tmp_path / "forced", folder_format="transformers")


def test_weights_transformers_has_no_place_for_stay_remote_code(tmp_path, caplog):
    """A module the config does not reveal (another head, say): found by the key rules, not saved natively."""
    model = tiny_model()
    model.extra_head = torch.nn.Linear(4, 4)
    with caplog.at_level(logging.WARNING, logger="modeling_maskformer.interop.saving"):
        model.save_pretrained(tmp_path)
    assert "extra_head.weight" in caplog.text and "remote-code folder" in caplog.text
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "maskformer-hf"


def test_remote_code_format_on_request_and_then_native_again(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path, folder_format="remote_code")
    MaskFormerImageProcessor(**PROCESSOR).save_pretrained(tmp_path)
    assert (tmp_path / "modeling_maskformer.py").is_file()
    model.save_pretrained(tmp_path)  # the same folder, now native: the code files go, the processor is marked
    assert not list(tmp_path.glob("*.py"))
    assert (
        json.loads((tmp_path / "preprocessor_config.json").read_text())["image_processor_type"]
        == "MaskFormerImageProcessor"
    )
    with pytest.raises(ValueError, match="folder_format='zip'"):
        model.save_pretrained(tmp_path, folder_format="zip")


# ---------------------------------------------------------------------------------------------------------
# transformers' own folders (built and saved by transformers), read by our classes
# ---------------------------------------------------------------------------------------------------------
BACKBONES = {
    "resnet": lambda: ResNetConfig(
        embedding_size=8, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1], out_features=STAGES
    ),
    # transformers' own way: a SwinConfig without out_features (transformers takes the four stages itself).
    "swin": lambda: SwinConfig(**SWIN),
}
# ResNet: the same modules in the same order (float32 rounding only: bit equality is not promised across
# implementations). Swin: transformers builds its MaskFormer-Swin where we build transformers' SwinBackbone (same
# weights, another order of floating-point operations).
TOLERANCE = {"resnet": SAME_GRAPH, "swin": 1e-4}


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_transformers_folder_loads_converted_on_the_fly(kind, tmp_path):
    torch.manual_seed(0)
    tf_config = transformers.MaskFormerConfig(
        backbone_config=BACKBONES[kind](),
        decoder_config=DetrConfig(**DECODER),
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
    )
    tf_model = transformers.MaskFormerForInstanceSegmentation(tf_config).eval()
    tf_model.save_pretrained(tmp_path)
    transformers.MaskFormerImageProcessor(**PROCESSOR).save_pretrained(tmp_path)
    ours = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    assert not ours.training and ours.config.num_queries == 10 and ours.config.hidden_size == 32
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        theirs, got = tf_model(pixel_values), ours(pixel_values)
    for field in ("class_queries_logits", "masks_queries_logits"):
        assert_close(getattr(got, field), getattr(theirs, field), atol=TOLERANCE[kind], what=f"{kind} {field}")
    assert MaskFormerImageProcessor.from_pretrained(tmp_path).size == PROCESSOR["size"]
    # transformers' constructor arguments build the same architecture in our config.
    config = MaskFormerConfig(
        backbone_config=BACKBONES[kind](),
        decoder_config=DetrConfig(**DECODER),
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
    )
    assert sum(p.numel() for p in MaskFormerForInstanceSegmentation(config).parameters()) == sum(
        p.numel() for p in ours.parameters()
    )


def test_transformers_base_folder_loads_into_our_base_model(tmp_path):
    tf_config = transformers.MaskFormerConfig(
        backbone_config=BACKBONES["resnet"](),
        decoder_config=DetrConfig(**DECODER),
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=3,
    )
    tf_model = transformers.MaskFormerModel(tf_config).eval()
    tf_model.save_pretrained(tmp_path)
    ours = MaskFormerModel.from_pretrained(tmp_path)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        theirs, got = tf_model(pixel_values), ours(pixel_values)
    for field in ("transformer_decoder_last_hidden_state", "pixel_decoder_last_hidden_state"):
        assert_close(getattr(got, field), getattr(theirs, field), atol=SAME_GRAPH, what=field)
