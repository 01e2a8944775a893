"""MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021) in the Hugging Face transformers style.

    from modeling_maskformer import (
        MaskFormerConfig, MaskFormerModel, MaskFormerForInstanceSegmentation, MaskFormerImageProcessor,
    )

Importing the package plugs interop/'s loading, saving and Hub upload into the models (`FolderIO`: the model
module never imports interop) and registers the classes with transformers' Auto classes, so `AutoConfig`,
`AutoModel`, `AutoModelForInstanceSegmentation`, `AutoModelForUniversalSegmentation`, `AutoImageProcessor` and
`pipeline("image-segmentation")` resolve our `model_type` "maskformer-hf" (and the per-pixel baseline's
"maskformer-per-pixel" through `AutoModelForSemanticSegmentation`). It changes nothing for other models: a
transformers MaskFormer checkpoint (`model_type` "maskformer") still gets transformers' own classes, and a folder
saved by this package never asks about remote code while it is imported.
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
    # Our models' (and the per-pixel baseline's) from_pretrained, save_pretrained and push_to_hub.
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
    # The paper's per-pixel baseline: semantic segmentation only.
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
