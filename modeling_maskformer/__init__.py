"""MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021) in the Hugging Face transformers style.

Importing the package plugs interop/'s folder I/O into the models (`FolderIO`: the model never imports interop) and
registers the classes with transformers' Auto classes and `pipeline("image-segmentation")` for our model_types
"maskformer-hf" and "maskformer-per-pixel"; transformers' own "maskformer" checkpoints keep transformers' classes.
"""

import transformers
from transformers import AutoConfig, AutoImageProcessor

from .configuration import MaskFormerConfig
from .configuration.configuration_per_pixel import PerPixelBaselineConfig
from .image_processing import MaskFormerImageProcessor
from .interop import hub, loading, saving
from .interop.loading import MaskFormerLoadError
from .modeling_maskformer import (
    FolderIO,
    MaskFormerForInstanceSegmentation,
    MaskFormerForInstanceSegmentationOutput,
    MaskFormerModel,
    MaskFormerModelOutput,
    MaskFormerPreTrainedModel,
)
from .paper.per_pixel import (
    PerPixelBaselineForSemanticSegmentation,
    PerPixelBaselineModel,
    PerPixelSemanticSegmentationOutput,
)


def _register() -> None:
    MaskFormerPreTrainedModel.folder_io = FolderIO(loading.from_pretrained, saving.save_pretrained, hub.push_to_hub)
    models = (MaskFormerModel, MaskFormerForInstanceSegmentation)
    models += (PerPixelBaselineModel, PerPixelBaselineForSemanticSegmentation)
    for config_class in (MaskFormerConfig, PerPixelBaselineConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        # NOTE: both backends, or transformers fills the default "torchvision" slot with its own processor.
        processors = dict.fromkeys(("torchvision", "pil"), MaskFormerImageProcessor)
        AutoImageProcessor.register(config_class, image_processor_classes=processors, exist_ok=True)
        # The Auto model classes are those the config's remote-code folders name (`remote_code.py`).
        for auto_class, target in config_class.remote_auto_map.items():
            if auto_class.startswith("AutoModel"):
                model = next(m for m in models if m.__name__ == target.rpartition(".")[2])
                getattr(transformers, auto_class).register(config_class, model, exist_ok=True)


_register()

__all__ = [
    "MaskFormerConfig",
    "MaskFormerForInstanceSegmentation",
    "MaskFormerForInstanceSegmentationOutput",
    "MaskFormerImageProcessor",
    "MaskFormerLoadError",
    "MaskFormerModel",
    "MaskFormerModelOutput",
    "MaskFormerPreTrainedModel",
    "PerPixelBaselineConfig",
    "PerPixelBaselineForSemanticSegmentation",
    "PerPixelBaselineModel",
    "PerPixelSemanticSegmentationOutput",
]
