"""A Gradio web demo (`build_demo(model_dir)`; `scripts/app.py` launches it): upload an image, pick a task and
thresholds, see the overlay and a table of segments. Safe to expose: the model is fixed by whoever starts it and loads
without remote code; only uploads and the bundled examples are read (`read_upload`), limited in bytes and in pixels
(read from the header, before decoding); `launch` listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from .. import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from ..data.labels import TASKS, model_thing_ids, segment
from ..errors import InvalidInputError
from ..export import MaskFormerRuntimeModel
from .prediction_writers import segments_table
from .visualization import draw

TABLE_HEADERS = ["label", "score", "area %"]
EXAMPLES = Path(__file__).resolve().parent / "assets" / "examples"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024  # 10 MB per upload
    max_pixels: int = 25_000_000  # 25 megapixels
    max_side: int = 8192
    display_side: int = 1024  # larger images are shrunk (aspect kept) before prediction and drawing


class UploadError(InvalidInputError):
    """An upload the app refuses; its message is shown to the visitor."""


def example_images() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def read_upload(
    path: str | os.PathLike | None, limits: Limits = Limits(), roots: list[Path] | None = None
) -> Image.Image:
    """The uploaded image as RGB, or an `UploadError` saying what is wrong with it. `roots`: the folders uploads may
    come from (default: Gradio's upload folder and the examples)."""
    if path is None or str(path) == "":
        raise UploadError("Upload an image first (or pick an example).")
    resolved = Path(path).resolve()
    if roots is None:
        from gradio.utils import get_upload_folder  # NOTE: gradio is optional (the [app] extra), so imported here

        roots = [get_upload_folder(), EXAMPLES]
    roots = [Path(r).resolve() for r in roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UploadError("That file is not an upload of this page; only uploaded images can be segmented.")
    if not resolved.is_file():
        raise UploadError("The upload is missing; please upload the image again.")
    size = resolved.stat().st_size
    if size > limits.max_bytes:
        raise UploadError(f"The upload is {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.0f} MB.")
    try:
        with Image.open(resolved) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > limits.max_pixels or max(width, height) > limits.max_side:
                raise UploadError(
                    f"The image is {width}x{height} pixels; the limit is {limits.max_pixels / 1e6:.0f} megapixels "
                    f"and {limits.max_side} pixels a side."
                )
            image = image.convert("RGB")
    except UploadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise UploadError(f"Could not read the upload as an image ({type(error).__name__}).") from None
    if max(image.size) > limits.display_side:
        image.thumbnail((limits.display_side, limits.display_side), Image.Resampling.LANCZOS)
    if min(image.size) < 32:
        raise UploadError(f"The image is {image.width}x{image.height} pixels; both sides must be at least 32.")
    return image


def load_model(model_dir: str | os.PathLike, *, precision: str = "fp32"):
    """(model, processor) from our model folder / Hub id, or from an exported folder (has `export.json`)."""
    if (Path(model_dir) / "export.json").is_file():
        model = MaskFormerRuntimeModel.from_pretrained(model_dir, precision=precision)
    else:
        model = MaskFormerForInstanceSegmentation.from_pretrained(model_dir).eval()
    return model, MaskFormerImageProcessor.from_pretrained(model_dir)


class Segmenter:
    """The app's logic without Gradio: image + settings -> (overlay, rows of the segments table), with the model's
    things and stuff (`data.labels.segment`)."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.thing_ids = model_thing_ids(model.config, getattr(model.config, "name_or_path", "") or "the model")

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        task: str = "panoptic",
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_threshold: float = 0.8,
    ) -> tuple[Image.Image, list[list[Any]]]:
        if task not in TASKS:
            raise UploadError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
        outputs = self.model(**self.processor(image, return_tensors="pt"))
        post = {"threshold": threshold, "mask_threshold": mask_threshold}
        post["overlap_mask_area_threshold"] = overlap_threshold
        size = [(image.height, image.width)]
        [result] = segment(self.processor, outputs, task, thing_ids=self.thing_ids, target_sizes=size, **post)
        rows = [
            [row["label"], row["score"] and round(row["score"], 3), round(100 * row["area_fraction"], 2)]
            for row in segments_table(result, task, self.id2label)
        ]
        return draw(image, result, self.id2label, task=task), sorted(rows, key=lambda row: -row[2])


def _image_input(**kwargs):
    """A `gr.Image` whose handler gets the upload's path unopened, so that `read_upload` reports a bad file."""
    import gradio as gr

    component = gr.Image(type="filepath", **kwargs)

    def keep_path(payload):
        if payload is None:
            return None
        if payload.path is None:  # a data: URL instead of an uploaded file
            raise gr.Error("Upload the image as a file.", print_exception=False)
        return payload.path

    # NOTE: an instance attribute, not a subclass: Gradio writes a .pyi stub next to any module that defines a
    # component subclass.
    component.preprocess = keep_path
    return component


def build_demo(model_dir: str | os.PathLike, *, precision: str = "fp32", limits: Limits = Limits()):
    """The Gradio Blocks of the demo for the model at `model_dir` (chosen here, never by a visitor)."""
    import gradio as gr

    segmenter = Segmenter(*load_model(model_dir, precision=precision))

    def segment(path, task, threshold, mask_threshold, overlap_threshold):
        try:
            image = read_upload(path, limits)
            return segmenter(image, task, threshold, mask_threshold, overlap_threshold)
        except UploadError as error:
            raise gr.Error(str(error), print_exception=False) from None

    labels = ", ".join(segmenter.id2label[i] for i in sorted(segmenter.id2label))
    with gr.Blocks(title="MaskFormer demo") as demo:
        gr.Markdown(
            "# MaskFormer: semantic, instance and panoptic segmentation\n"
            f"Model: `{Path(str(model_dir)).name}` ({len(segmenter.id2label)} classes: {labels}). "
            f"Images up to {limits.max_bytes // 2**20} MB and {limits.max_pixels / 1e6:.0f} megapixels."
        )
        with gr.Row():
            with gr.Column():
                upload = _image_input(sources=["upload"], label="image", elem_id="upload")
                task = gr.Radio(list(TASKS), value="panoptic", label="task", elem_id="task")
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="score threshold (instance, panoptic)")
                mask_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="mask threshold")
                overlap = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="overlap threshold")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column():
                overlay = gr.Image(type="pil", label="overlay", elem_id="overlay", format="png")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="segments", elem_id="segments", interactive=False)
        inputs = [upload, task, threshold, mask_threshold, overlap]
        gr.Examples([[str(p)] for p in example_images()], inputs=[upload])
        button.click(segment, inputs, [overlay, table], api_name="segment")
        task.change(segment, inputs, [overlay, table], api_name=False)
    return demo


def launch(demo, *, host: str | None = None, port: int | None = None, limits: Limits = Limits(), **kwargs):
    """`demo.launch` with the upload limit, the examples readable, on `host`, else $GRADIO_SERVER_NAME (a Space's),
    else 127.0.0.1."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    return demo.launch(
        server_name=host, server_port=port, max_file_size=limits.max_bytes, allowed_paths=[str(EXAMPLES)], **kwargs
    )
