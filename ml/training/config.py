"""Training configuration: one dataclass, recorded verbatim in every manifest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

WEIGHTS_DIR_ENV = "IMAGENET_WEIGHTS_DIR"
ARTIFACTS_DIR_ENV = "PNEUMONIA_ARTIFACTS_DIR"
DEFAULT_ARTIFACTS_DIR = "runs"
# Training augmentation policies ml.training.batches implements (here so that the CLI need not import Keras).
AUGMENTATION_POLICIES = ("geometric", "acquisition", "robust")
# Every architecture ml.training.architectures can build (kept here so callers need not import Keras).
ARCHITECTURE_NAMES = (
    "cnn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "resnet50v2", "xception", "xception_mid", "mobilenetv2",
)  # fmt: skip


@dataclass
class StageConfig:
    """One stage of progressive fine-tuning."""

    name: str  # "head" | "partial" | "full"
    epochs: int
    learning_rate: float
    optimizer: str = "adam"  # "adam" | "sgd"


@dataclass
class TrainConfig:
    architecture: str = "cnn"
    input_size: int = 128
    # "none", "imagenet" (local file in IMAGENET_WEIGHTS_DIR first, else Keras download),
    # "auto" (local file if present, else none: used by the comparison), or a file/dir path.
    weights: str = "none"
    epochs: int = 10  # from-scratch epochs, or head-stage epochs for pretrained backbones
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # "adam" | "sgd" (first stage; later stages name their own)
    fine_tune_stages: list[StageConfig] = field(default_factory=list)
    val_fraction: float = 0.2
    seed: int = 1337
    split_seed: int | None = None  # the patient split's seed when it must differ from `seed` (ensemble members)
    max_train_images: int | None = None  # compute budget for heavy from-scratch rows
    max_val_images: int | None = None
    class_weighting: str = "balanced"  # "balanced" | "none"
    augment: bool = True
    augmentation_policy: str = "geometric"  # one of AUGMENTATION_POLICIES (ml.training.batches.make_dataset)
    early_stopping_patience: int = 3
    reduce_lr_patience: int = 1
    bootstrap_samples: int = 1000
    threshold_rule: str = "youden"
    name: str | None = None
    # Warm start: a .weights.h5 of the same architecture and size (e.g. a trained artifact's) to begin from.
    init_weights: str | None = None
    # Distillation: "relpath<TAB>probability" lines of a teacher's scores on the training films; the
    # training target becomes (1 - distill_alpha) * label + distill_alpha * teacher.
    soft_labels: str | None = None
    distill_alpha: float = 0.5
    # Wall-clock budget for all fitting; when spent, training stops and keeps its best weights (recorded).
    max_fit_seconds: float | None = None
    # "auto": mixed_float16 when Keras trains on a GPU (its tensor cores), float32 on a CPU; or a Keras dtype
    # policy by name ("float32", "mixed_float16", "mixed_bfloat16"). The served model is float32 either way.
    precision: str = "auto"
    # Cells of the last feature map's outer frame left out of the global average pooling (0: all cells).
    # Those cells' features are made largely of the convolutions' zero padding and the film's edge (side
    # markers, collimation), and with them in the pool the class activation map put its hottest cell on a
    # corner in 97 % of flagged external films; 1 keeps the map, and the evidence, inside the film.
    pool_margin: int = 0

    @property
    def patient_split_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def vgg19_progressive_stages() -> list[StageConfig]:
    """The source project's VGG19 schedule: head, block5_conv3/4, everything; SGD lr 1e-4."""
    return [
        StageConfig("head", 10, 1e-4, "sgd"),
        StageConfig("partial", 5, 1e-4, "sgd"),
        StageConfig("full", 5, 1e-4, "sgd"),
    ]
