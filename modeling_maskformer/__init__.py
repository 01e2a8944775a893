"""MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021) in the Hugging Face transformers style.

Importing the package plugs interop/'s folder I/O into the models (`FolderIO`: the model never imports interop) and
registers the classes with transformers' Auto classes and `pipeline("image-segmentation")` for our model_types
"maskformer-hf" and "maskformer-per-pixel"; transformers' own "maskformer" checkpoints keep transformers' classes.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageSegmentation,
    AutoModelForInstanceSegmentation,
    AutoModelForSemanticSegmentation,
    AutoModelForUniversalSegmentation,
)

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
    AutoConfig.register(MaskFormerConfig.model_type, MaskFormerConfig, exist_ok=True)
    AutoModel.register(MaskFormerConfig, MaskFormerModel, exist_ok=True)
    # NOTE: every segmentation Auto class the pipeline may try: an unregistered one resolves our config by its
    # class name, "MaskFormerConfig", to transformers' own MaskFormer.
    for auto_class in (
        AutoModelForInstanceSegmentation,
        AutoModelForUniversalSegmentation,
        AutoModelForImageSegmentation,
        AutoModelForSemanticSegmentation,
    ):
        auto_class.register(MaskFormerConfig, MaskFormerForInstanceSegmentation, exist_ok=True)
    # NOTE: both backends, or transformers fills the default "torchvision" slot with its own processor.
    for config_class in (MaskFormerConfig, PerPixelBaselineConfig):
        AutoImageProcessor.register(
            config_class,
            image_processor_classes=dict.fromkeys(("torchvision", "pil"), MaskFormerImageProcessor),
            exist_ok=True,
        )
    AutoConfig.register(PerPixelBaselineConfig.model_type, PerPixelBaselineConfig, exist_ok=True)
    AutoModel.register(PerPixelBaselineConfig, PerPixelBaselineModel, exist_ok=True)
    AutoModelForSemanticSegmentation.register(
        PerPixelBaselineConfig, PerPixelBaselineForSemanticSegmentation, exist_ok=True
    )


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
