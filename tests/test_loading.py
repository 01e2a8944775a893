"""Loading folders with this package imported: no remote-code prompt for ours, transformers' own classes for
transformers' folders (both checked on a pseudo-terminal, where the prompt appears), our error, never
transformers' randomly initialised model, for a folder whose weights do not fit its config, and clear errors
for folders that are not ours."""

from __future__ import annotations

import json
import logging
import shutil
import textwrap

import pytest
import torch
from PIL import Image
from transformers import AutoModelForUniversalSegmentation, pipeline

from modeling_maskformer import (
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    MaskFormerImageProcessor,
    MaskFormerLoadError,
    MaskFormerModel,
)
from modeling_maskformer.errors import MissingInputError
from modeling_maskformer.interop.transformers_weights import convert_to_transformers

from builders import run_in_terminal, tiny_model

PROMPT = "Do you wish to run the custom code?"
AUTO_CLASSES = [
    "AutoConfig",
    "AutoModel",
    "AutoModelForInstanceSegmentation",
    "AutoModelForUniversalSegmentation",
    "AutoImageProcessor",
    "AutoProcessor",
    "AutoVideoProcessor",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("loading")
    model = tiny_model(id2label={0: "sky", 1: "circle", 2: "square"}, label2id={"sky": 0, "circle": 1, "square": 2})
    processor = MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    model.save_pretrained(root / "ours", folder_format="remote_code")
    processor.save_pretrained(root / "ours")
    convert_to_transformers(model, root / "transformers", processor=processor)
    Image.new("RGB", (80, 64), (120, 30, 200)).save(root / "image.png")
    return root


def load_everything(folders, *, import_package: bool = True, prompt_timeout: int | None = None) -> str:
    """A program that loads both folders through the pipeline and each Auto class, and prints what it got."""
    return textwrap.dedent(f"""
        import json, transformers
        {"import modeling_maskformer" if import_package else ""}
        {f"transformers.dynamic_module_utils.TIME_OUT_REMOTE_CODE = {prompt_timeout}" if prompt_timeout else ""}
        from transformers import pipeline
        report = {{}}
        for name in ("ours", "transformers"):
            folder = {str(folders)!r} + "/" + name
            segmenter = pipeline("image-segmentation", model=folder)
            segmenter({str(folders / "image.png")!r}, subtask="panoptic", threshold=0.0)
            got = {{"pipeline model": type(segmenter.model), "pipeline processor": type(segmenter.image_processor)}}
            for auto in {AUTO_CLASSES!r}:
                try:
                    got[auto] = type(getattr(transformers, auto).from_pretrained(folder))
                except ValueError as error:  # e.g. no video processor: what matters is that nothing asked
                    got[auto] = None
            report[name] = {{key: None if cls is None else f"{{cls.__module__}}.{{cls.__name__}}" for key, cls in got.items()}}
        print("RESULT-JSON:" + json.dumps(report))
    """)


def run_report(code: str, tmp_path) -> tuple[dict, str]:
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
    }
    status, output = run_in_terminal(code, env=env, cwd=tmp_path, timeout=240)
    assert status == 0, output[-4000:]
    return json.loads(output.split("RESULT-JSON:", 1)[1].splitlines()[0]), output


@pytest.fixture(scope="module")
def terminal_report(folders, tmp_path_factory):
    return run_report(load_everything(folders), tmp_path_factory.mktemp("run"))


def test_no_remote_code_prompt_for_our_folder(terminal_report):
    report, output = terminal_report
    assert PROMPT not in output and "custom code" not in output, output[-3000:]
    ours = report["ours"]
    for key in (
        "pipeline model",
        "AutoModel",
        "AutoModelForInstanceSegmentation",
        "AutoModelForUniversalSegmentation",
    ):
        assert ours[key].startswith("modeling_maskformer.modeling_maskformer."), (key, ours[key])
    for key in ("pipeline processor", "AutoImageProcessor", "AutoProcessor"):
        assert (
            ours[key] == "modeling_maskformer.image_processing.image_processing_maskformer.MaskFormerHFImageProcessor"
        )
    assert ours["AutoConfig"].startswith("modeling_maskformer.configuration.")


def test_transformers_folder_keeps_transformers_classes(terminal_report):
    theirs = terminal_report[0]["transformers"]
    processor = "transformers.models.maskformer.image_processing_maskformer.MaskFormerImageProcessor"
    assert theirs["pipeline processor"] == theirs["AutoImageProcessor"] == theirs["AutoProcessor"] == processor
    for key in ("pipeline model", "AutoModelForInstanceSegmentation", "AutoModelForUniversalSegmentation"):
        assert theirs[key] == "transformers.models.maskformer.modeling_maskformer.MaskFormerForInstanceSegmentation"
    assert theirs["AutoConfig"] == "transformers.models.maskformer.configuration_maskformer.MaskFormerConfig"


def test_the_terminal_check_sees_a_prompt(folders, tmp_path):
    """Control: the layout that made transformers ask (an auto_map in preprocessor_config.json) does ask here,
    so the checks above would catch a prompt."""
    old_layout = tmp_path / "old"
    shutil.copytree(folders / "ours", old_layout)
    settings = json.loads((old_layout / "preprocessor_config.json").read_text())
    settings["auto_map"] = {"AutoImageProcessor": "image_processing_maskformer.MaskFormerHFImageProcessor"}
    (old_layout / "preprocessor_config.json").write_text(json.dumps(settings))
    code = f"""
import transformers, modeling_maskformer
transformers.dynamic_module_utils.TIME_OUT_REMOTE_CODE = 1
from transformers import pipeline
pipeline("image-segmentation", model={str(old_layout)!r})
"""
    status, output = run_in_terminal(code, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=240)
    assert PROMPT in output, output[-3000:]


# ---------------------------------------------------------------------------------------------------------
# A folder whose weights do not fit its config: our error, whatever the entry point
# ---------------------------------------------------------------------------------------------------------
def edited_copy(folders, tmp_path, **changes):
    folder = tmp_path / "edited"
    shutil.copytree(folders / "ours", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


EDITS = {
    "hidden_size": ({"hidden_size": 64}, "hidden_size is 64 in the config but 32"),
    "num_queries": ({"num_queries": 12}, "num_queries is 12 in the config but 10"),
    "decoder_layers": ({"decoder_layers": 3}, "decoder_layers is 3 in the config but 2"),
    "decoder_ffn_dim": ({"decoder_ffn_dim": 128}, "decoder_ffn_dim is 128 in the config but 64"),
    "id2label": ({"id2label": {str(i): f"c{i}" for i in range(5)}}, "num_labels .* is 5 in the config but 3"),
    "num_labels": ({"num_labels": 5}, "num_labels .* is 5 in the config but 3"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_pipeline_raises_our_error_for_weights_that_do_not_fit(folders, tmp_path, edit):
    changes, message = EDITS[edit]
    folder = edited_copy(folders, tmp_path, **changes)
    with pytest.raises(MaskFormerLoadError, match=message):
        pipeline("image-segmentation", model=str(folder))
    with pytest.raises(MaskFormerLoadError, match=message):
        AutoModelForUniversalSegmentation.from_pretrained(folder)


def test_backbone_that_does_not_fit_is_our_error(folders, tmp_path):
    config = json.loads((folders / "ours" / "config.json").read_text())
    wider = {**config["backbone_config"], "hidden_sizes": [8, 16, 32, 128]}
    with pytest.raises(MaskFormerLoadError, match="tensors differ"):
        pipeline("image-segmentation", model=str(edited_copy(folders, tmp_path, backbone_config=wider)))
    deeper = {**config["backbone_config"], "depths": [1, 1, 2, 1]}  # layers the checkpoint lacks
    shutil.rmtree(tmp_path / "edited")
    with pytest.raises(MaskFormerLoadError, match="missing keys"):
        MaskFormerForInstanceSegmentation.from_pretrained(edited_copy(folders, tmp_path, backbone_config=deeper))


def test_damaged_weights_are_our_error(folders, tmp_path):
    folder = edited_copy(folders, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(MaskFormerLoadError, match="model.safetensors: not a readable safetensors file"):
        pipeline("image-segmentation", model=str(folder))


def test_fitting_loads_still_work(folders, caplog):
    folder = folders / "ours"
    base = MaskFormerModel.from_pretrained(folder)  # the base model from a full checkpoint
    assert not base.training
    with caplog.at_level(logging.WARNING):
        relabelled = MaskFormerForInstanceSegmentation.from_pretrained(folder, num_labels=5)
    assert relabelled.class_head.out_features == 6 and "newly initialised" in caplog.text
    model, info = MaskFormerForInstanceSegmentation.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


# ---------------------------------------------------------------------------------------------------------
# Invalid configs and folders that are not ours
# ---------------------------------------------------------------------------------------------------------
def test_non_contiguous_id2label_is_refused(folders, tmp_path):
    labels = {i: f"c{i}" for i in [0, 1, 2, 3, 4, 5, 7, 8, 20]}
    with pytest.raises(ValueError, match=r"MaskFormerConfig\.id2label: class ids must be 0\.\.8 without gaps"):
        MaskFormerConfig(id2label=labels, label2id={v: k for k, v in labels.items()})
    folder = edited_copy(folders, tmp_path, id2label={"0": "sky", "1": "circle", "3": "square"})
    with pytest.raises(ValueError, match=r"id2label: .*got \[0, 1, 3\]"):
        pipeline("image-segmentation", model=str(folder))


def test_folder_without_config_is_a_clear_error(folders, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((folders / "ours" / "model.safetensors").read_bytes())
    for load in (MaskFormerForInstanceSegmentation.from_pretrained, MaskFormerConfig.from_pretrained):
        with pytest.raises(OSError, match="has no config.json: not a saved model folder"):
            load(tmp_path)


def test_hub_repo_not_found_is_a_user_error():
    """Offline here (conftest): transformers' OSError becomes one line the command-line programs print."""
    with pytest.raises(MissingInputError, match=r"^nobody/no-such-maskformer: no such local folder") as caught:
        MaskFormerForInstanceSegmentation.from_pretrained("nobody/no-such-maskformer")
    assert "\n" not in str(caught.value)


def test_missing_path_says_so():
    with pytest.raises(FileNotFoundError, match="/no/such/folder: no such file or folder"):
        MaskFormerForInstanceSegmentation.from_pretrained("/no/such/folder")


# ---------------------------------------------------------------------------------------------------------
# A model left in training mode
# ---------------------------------------------------------------------------------------------------------
def test_training_mode_inference_warns_once(folders, caplog):
    model = MaskFormerForInstanceSegmentation.from_pretrained(folders / "ours")
    processor = MaskFormerImageProcessor.from_pretrained(folders / "ours")
    segmenter = pipeline("image-segmentation", model=model, image_processor=processor)
    image = Image.open(folders / "image.png")
    with caplog.at_level(logging.WARNING, logger="modeling_maskformer.modeling_maskformer"):
        segmenter(image, subtask="semantic")
        assert "training mode" not in caplog.text  # loaded models are in eval mode
        model.train()
        segmenter(image, subtask="semantic")
        segmenter(image, subtask="semantic")
        pixel_values = processor(image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            model(
                pixel_values,
                mask_labels=[torch.zeros(0, *pixel_values.shape[-2:])],
                class_labels=[torch.zeros(0, dtype=torch.long)],
            )
    assert caplog.text.count("called in training mode without labels") == 1
