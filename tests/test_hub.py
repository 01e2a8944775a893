"""Hub-ready folders: remote code + auto_map that load without this package, the model card, the upload."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from modeling_maskformer import MaskFormerImageProcessor
from modeling_maskformer.configuration.remote_code import (
    CONFIG_AUTO_MAP,
    flatten_imports,
    remote_code_modules,
)
from modeling_maskformer.interop.hub import build_model_card

from builders import PACKAGE_BLOCKER, run_in_terminal, tiny_model

ALL_FILES = sorted(remote_code_modules())
# transformers copies into its module cache only what MaskFormer's auto_map imports, so a MaskFormer loaded with
# trust_remote_code re-saves without the per-pixel baseline's two entry modules.
MASKFORMER_FILES = sorted(set(ALL_FILES) - {"per_pixel.py", "configuration_per_pixel.py"})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub-folder")
    model = tiny_model(
        id2label={0: "sky", 1: "circle", 2: "square"}, label2id={"sky": 0, "circle": 1, "square": 2}
    ).eval()
    processor = MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    model.save_pretrained(folder, folder_format="remote_code")  # the format of models transformers cannot represent
    processor.save_pretrained(folder)
    return model, processor, folder


def test_folder_carries_auto_map_and_flat_code(saved):
    _, _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == CONFIG_AUTO_MAP
    # The processor's JSON names no class: an auto_map there makes transformers' AutoVideoProcessor prompt.
    processor_json = json.loads((folder / "preprocessor_config.json").read_text())
    assert "auto_map" not in processor_json and "image_processor_type" not in processor_json
    python_files = sorted(path.name for path in folder.glob("*.py"))
    assert python_files == ALL_FILES
    for name in ALL_FILES:
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module and (folder / f"{node.module}.py").is_file(), (
                    name,
                    node.module,
                )
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(
                    n.split(".")[0] in {"modeling_maskformer", "configuration", "image_processing"}
                    for n in names
                    if not getattr(node, "level", 0)
                ), (name, names)


def test_remote_code_files_come_from_the_import_graph():
    # The modules the model, config and processor need, lazily imported ones (post-processing) included; nothing
    # the model does not import: training, data, evaluation, the CLI, and interop/ (loading, saving and the Hub
    # upload are plugged into the model by the package face, so remote code gets transformers' own).
    for name in (
        "modeling_maskformer.py",
        "configuration_maskformer.py",
        "image_processing_maskformer.py",
        "remote_code.py",
        "post_processing.py",
        "matcher.py",
        "transformers_format.py",
    ):
        assert name in ALL_FILES, name
    for name in ("cli.py", "loop.py", "evaluator.py", "collator.py", "__init__.py", "loading.py", "hub.py"):
        assert name not in ALL_FILES, name
    assert not {"transformers_weights.py", "transformers_folder.py", "saving.py"} & set(ALL_FILES)


def test_flatten_imports_rewrites_import_statements_only():
    source = textwrap.dedent('''\
        """Docstring: from ..configuration.x import y stays as written."""
        from __future__ import annotations
        from ..configuration.configuration_maskformer import (
            A,
            B,
        )
        from .validation import C; from ..configuration.remote_code import D
        from . import sampling


        def f():
            from .post_processing import semantic_segmentation
            return "from .image_processing.x import z"
    ''')
    flat = flatten_imports(source, "modeling_maskformer.image_processing.image_processing_maskformer")
    assert flat.splitlines() == [
        '"""Docstring: from ..configuration.x import y stays as written."""',
        "from __future__ import annotations",
        "from .configuration_maskformer import (",
        "    A,",
        "    B,",
        ")",
        "from .validation import C; from .remote_code import D",
        "from . import sampling",
        "",
        "",
        "def f():",
        "    from .post_processing import semantic_segmentation",
        '    return "from .image_processing.x import z"',
    ]


BLOCKER = PACKAGE_BLOCKER


def test_loads_in_a_fresh_process_without_this_package(saved, tmp_path):
    """trust_remote_code=True in a process without this package: the model, the processor and the pipeline."""
    model, _, folder = saved
    torch.manual_seed(0)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixel_values).masks_queries_logits.sum().item()
    torch.save(pixel_values, tmp_path / "x.pt")
    from PIL import Image

    Image.new("RGB", (80, 64), (120, 30, 200)).save(tmp_path / "image.png")
    script = BLOCKER % {"root": str(Path(__file__).resolve().parents[1])} + textwrap.dedent(f"""
        import importlib.util, torch
        from transformers import AutoImageProcessor, AutoModelForInstanceSegmentation, pipeline
        try:
            import modeling_maskformer
            raise SystemExit("the package is importable: the test would prove nothing")
        except ModuleNotFoundError:
            pass
        folder = {str(folder)!r}
        model = AutoModelForInstanceSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(processor).__name__ == "MaskFormerHFImageProcessor", type(processor)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            value = model(torch.load({str(tmp_path / "x.pt")!r})).masks_queries_logits.sum().item()
        assert abs(value - {expected!r}) < 1e-3 * max(1.0, abs({expected!r})), (value, {expected!r})
        segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
        for subtask in ("semantic", "instance", "panoptic"):
            result = segmenter({str(tmp_path / "image.png")!r}, subtask=subtask, threshold=0.0)
            assert isinstance(result, list), subtask
        # Saved again from the remote code: the same complete folder.
        model.save_pretrained("resaved", folder_format="remote_code")
        processor.save_pretrained("resaved")
        import pathlib
        assert sorted(p.name for p in pathlib.Path("resaved").glob("*.py")) == {MASKFORMER_FILES!r}
        assert "auto_map" not in (pathlib.Path("resaved") / "preprocessor_config.json").read_text()
        print("OK")
    """)
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
    }
    # On a terminal, where transformers would ask before running remote code it was not told to trust.
    status, output = run_in_terminal(script, env=env, cwd=tmp_path)
    assert status == 0 and "OK" in output, output[-4000:]
    assert "custom code" not in output, output[-4000:]


def test_model_card_metadata():
    model = tiny_model()
    card = build_model_card(
        model.config,
        repo_id="me/maskformer-demo",
        metrics={"mean_iou": 0.9123, "pq": 0.75, "mask_ap": None},
        dataset="synthetic-shapes",
        training_args={"learning_rate": 3e-4},
    )
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-segmentation"
    assert data["license"] == "apache-2.0" and "maskformer" in data["tags"]
    assert data["datasets"] == ["synthetic-shapes"] and data["widget"]
    results = data["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"mean_iou": 0.9123, "pq": 0.75}
    reparsed = ModelCard(str(card))
    assert reparsed.data.to_dict() == data
    assert "learning_rate" in card.text and "| mIoU |" not in card.text and "| mean_iou | 0.9123 |" in card.text


def test_model_card_without_metrics_has_no_model_index():
    card = build_model_card(tiny_model().config)
    assert "model-index" not in card.data.to_dict()


class RecordingApi:
    """Stands in for huggingface_hub.HfApi at the library boundary and records what would be uploaded."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        self.calls.append(("upload_folder", repo_id, files))
        return type("Commit", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()


def test_push_to_hub_uploads_a_complete_folder(saved):
    model, processor, _ = saved
    api = RecordingApi()
    url = model.push_to_hub(
        "me/maskformer-tiny", processor=processor, metrics={"mean_iou": 0.5}, dataset="synthetic", api=api
    )
    assert url.endswith("/commit/1")
    assert api.calls[0][:2] == ("create_repo", "me/maskformer-tiny")
    _, repo_id, files = api.calls[1]
    assert repo_id == "me/maskformer-tiny"
    # The tiny model is representable: transformers' own format, no code.
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert not [name for name in files if name.endswith(".py")]
    assert json.loads(files["config.json"])["model_type"] == "maskformer"
    card = ModelCard(files["README.md"].decode())
    assert "trust_remote_code=True" not in card.text and "no `trust_remote_code`" in card.text
    assert card.data.pipeline_tag == "image-segmentation"
    assert card.data.to_dict()["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5


def test_push_folder_requires_a_saved_model(tmp_path):
    from modeling_maskformer.interop.hub import push_folder_to_hub

    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_folder_to_hub(tmp_path, "me/x", api=RecordingApi())


@pytest.mark.parametrize("what", ["config", "model", "processor"])
def test_save_with_push_uploads_after_the_code_is_written(saved, tmp_path, monkeypatch, what):
    model, processor, _ = saved
    obj = {"config": model.config, "model": model, "processor": processor}[what]
    calls = []

    def record(self, repo_id, **kwargs):
        calls.append((repo_id, kwargs, sorted(path.name for path in tmp_path.glob("*.py"))))

    monkeypatch.setattr(type(obj), "push_to_hub", record)
    extra = {"folder_format": "remote_code"} if what == "model" else {}
    obj.save_pretrained(tmp_path, push_to_hub=True, repo_id="me/maskformer", token="secret", private=True, **extra)
    assert calls == [("me/maskformer", {"token": "secret", "private": True}, ALL_FILES)]


def test_native_save_with_push_uploads_after_the_folder_is_written(saved, tmp_path, monkeypatch):
    model = saved[0]
    calls = []

    def record(self, repo_id, **kwargs):
        calls.append((repo_id, kwargs, sorted(path.name for path in tmp_path.iterdir())))

    monkeypatch.setattr(type(model), "push_to_hub", record)
    model.save_pretrained(tmp_path, push_to_hub=True, repo_id="me/maskformer", token="secret")
    assert calls == [("me/maskformer", {"token": "secret"}, ["config.json", "model.safetensors"])]
