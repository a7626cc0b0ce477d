"""Model builders and ImageNet weights resolution.

Every model takes float32 (N, S, S, 3) in 0..255 (ml.serving.decode output) and returns
P(PNEUMONIA) of shape (N, 1). The backbone's own normalisation is the first layer, so it is
exported into the ONNX graph. Each model is split into ``features`` (normalise + backbone +
pooling) and ``head`` sharing layers with the full model, so a frozen backbone's features can
be computed once and the head trained on them in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from ml.training.config import WEIGHTS_DIR_ENV

POOL_CROP_LAYER = "pool_margin"


class WeightsNotFoundError(FileNotFoundError):
    """ImageNet weights were asked for and are not available."""


@dataclass(frozen=True)
class ArchSpec:
    name: str
    application: Callable[..., keras.Model] | None  # keras.applications constructor
    normalization: str  # "unit" (x/255) | "tf" ([-1, 1]) | "caffe" (mean subtraction)
    keras_weights_file: str | None  # file name Keras caches in ~/.keras/models
    pooling: str = "avg"  # "avg" | "flatten"
    head_units: tuple[int, ...] = (128,)
    dropout: float = 0.3
    partial_unfreeze: tuple[str, ...] = ()  # layers opened in the "partial" stage
    default_input_size: int = 224
    # A backbone cut short: keep the application's layers up to its n-th residual Add (0-based), and
    # use the full application's ImageNet weights file (``weights_of``).
    truncate_after_add: int | None = None
    weights_of: str | None = None
    has_imagenet_weights: bool = True  # False: a from-scratch-only variant


ARCHITECTURES: dict[str, ArchSpec] = {
    "cnn": ArchSpec("cnn", None, "unit", None, head_units=(64,), dropout=0.3, default_input_size=128),
    "vgg16": ArchSpec(
        "vgg16",
        keras.applications.VGG16,
        "caffe",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        partial_unfreeze=("block5_conv2", "block5_conv3"),
    ),
    "vgg19": ArchSpec(
        "vgg19",
        keras.applications.VGG19,
        "caffe",
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        pooling="flatten",
        head_units=(4608, 1152),
        dropout=0.2,
        partial_unfreeze=("block5_conv3", "block5_conv4"),
        default_input_size=128,
    ),
    # From-scratch variants of the source projects' VGGs: the same convolutions and head with
    # BatchNormalization after every convolution, without which VGG trained from random weights here
    # stalls at chance. No ImageNet weights exist for them; layer names match VGG's, so the partial
    # stage opens the same layers.
    "vgg16_bn": ArchSpec(
        "vgg16_bn",
        lambda **kw: _vgg_bn((2, 2, 3, 3, 3), "vgg16_bn", **kw),
        "caffe",
        None,
        partial_unfreeze=("block5_conv2", "block5_conv3"),
        default_input_size=128,
        has_imagenet_weights=False,
    ),
    "vgg19_bn": ArchSpec(
        "vgg19_bn",
        lambda **kw: _vgg_bn((2, 2, 4, 4, 4), "vgg19_bn", **kw),
        "caffe",
        None,
        pooling="flatten",
        head_units=(4608, 1152),
        dropout=0.2,
        partial_unfreeze=("block5_conv3", "block5_conv4"),
        default_input_size=128,
        has_imagenet_weights=False,
    ),
    "resnet50v2": ArchSpec(
        "resnet50v2",
        keras.applications.ResNet50V2,
        "tf",
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        partial_unfreeze=("conv5_block3_2_conv", "conv5_block3_3_conv"),
    ),
    "xception": ArchSpec(
        "xception",
        keras.applications.Xception,
        "tf",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        partial_unfreeze=("block14_sepconv1", "block14_sepconv2"),
    ),
    # Xception's entry flow and first three middle-flow blocks (through block7): mid-level ImageNet
    # features generalise to films of a new period better than the last block's (docs/model-comparison.md),
    # and the cut backbone is a quarter of Xception's size.
    "xception_mid": ArchSpec(
        "xception_mid",
        keras.applications.Xception,
        "tf",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        head_units=(),
        dropout=0.2,
        # The "partial" stage opens the three middle-flow blocks the cut keeps.
        partial_unfreeze=tuple(f"block{b}_sepconv{i}" for b in (5, 6, 7) for i in (1, 2, 3)),
        truncate_after_add=5,
        weights_of="xception",
    ),
    "mobilenetv2": ArchSpec(
        "mobilenetv2",
        keras.applications.MobileNetV2,
        "tf",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        partial_unfreeze=("block_16_project", "Conv_1"),
        default_input_size=128,
    ),
}


def local_weights_name(architecture: str) -> str:
    """The file name looked for in IMAGENET_WEIGHTS_DIR, e.g. xception_imagenet_notop.weights.h5."""
    return f"{architecture}_imagenet_notop.weights.h5"


def resolve_weights(architecture: str, weights: str, weights_dir: str | Path | None = None) -> str | None:
    """'none' | 'imagenet' | 'auto' | file | directory -> what keras.applications accepts.

    Returns None for random initialisation, a local file path, or "imagenet" (Keras download).
    Raises WeightsNotFoundError naming the expected file when weights were asked for.
    """
    spec = ARCHITECTURES[architecture]
    from_scratch_only = spec.application is None or not spec.has_imagenet_weights
    if weights == "none" or (weights == "auto" and from_scratch_only):
        return None
    if from_scratch_only:
        raise WeightsNotFoundError(f"Architecture '{architecture}' is trained from scratch; use --weights none.")
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    if weights in ("imagenet", "auto", "local"):
        if weights_dir:
            found = _find_in_dir(architecture, Path(weights_dir))
            if found:
                return str(found)
        if weights == "auto":
            return None
        if weights == "imagenet":
            return "imagenet"  # Keras downloads it when online; see build_model for the error
        raise WeightsNotFoundError(_missing_message(architecture, Path(weights_dir or "$" + WEIGHTS_DIR_ENV)))
    path = Path(weights).expanduser()
    if path.is_dir():
        found = _find_in_dir(architecture, path)
        if not found:
            raise WeightsNotFoundError(_missing_message(architecture, path))
        return str(found)
    if not path.is_file():
        raise WeightsNotFoundError(f"ImageNet weights file for {architecture} not found: {path}")
    return str(path)


def _find_in_dir(architecture: str, directory: Path) -> Path | None:
    spec = ARCHITECTURES[architecture]
    names = [local_weights_name(spec.weights_of or architecture), spec.keras_weights_file]
    for name in names:
        if name and (directory / name).is_file():
            return directory / name
    return None


def _missing_message(architecture: str, directory: Path) -> str:
    spec = ARCHITECTURES[architecture]
    return (
        f"ImageNet weights for {architecture} not found: expected "
        f"{directory / local_weights_name(architecture)} (or Keras' {spec.keras_weights_file}). "
        f"Put the file there, set {WEIGHTS_DIR_ENV}, or train from scratch with --weights none."
    )


@dataclass
class BuiltModel:
    model: keras.Model  # inputs 0..255 -> P(PNEUMONIA)
    features: keras.Model  # inputs 0..255 -> pooled backbone features
    head: keras.Model  # features -> P(PNEUMONIA); shares layers with ``model``
    backbone: keras.Model | None  # None for the from-scratch CNN
    weights_source: str | None


def build_model(
    architecture: str,
    *,
    input_size: int,
    weights: str | None,
    seed: int,
    pretrained: bool | None = None,
    pool_margin: int = 0,
) -> BuiltModel:
    """``weights`` is the output of resolve_weights; ``pretrained`` (default: weights given) keeps the
    backbone's BatchNorm in inference mode, also for weights loaded afterwards (a warm start).
    ``pool_margin``: cells of the last feature map's outer frame that average pooling leaves out
    (ml.training.config.TrainConfig.pool_margin); it has no weights, so a warm start from a model without it loads."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture '{architecture}'; choose from {sorted(ARCHITECTURES)}")
    keras.utils.set_random_seed(seed)
    spec = ARCHITECTURES[architecture]
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = _normalization(spec.normalization)(inputs)
    backbone = None
    if spec.application is None:
        x = _small_cnn(x)
    else:
        backbone = _application(spec, input_size, weights)
        # training=False keeps BatchNorm in inference mode while a pretrained base is tuned.
        pretrained = weights is not None if pretrained is None else pretrained
        x = backbone(x, training=False) if pretrained else backbone(x)
    if pool_margin:
        if spec.pooling != "avg":
            raise ValueError(f"{architecture} flattens its feature map; a pooling margin needs average pooling")
        x = keras.layers.Cropping2D(pool_margin, name=POOL_CROP_LAYER)(x)
    pool = (
        keras.layers.Flatten(name="flatten")
        if spec.pooling == "flatten"
        else keras.layers.GlobalAveragePooling2D(name="pool")
    )
    features_out = pool(x)
    head_layers = _head_layers(spec)
    outputs = _apply(head_layers, features_out)
    model = keras.Model(inputs, outputs, name=architecture)
    features = keras.Model(inputs, features_out, name=f"{architecture}_features")
    head_in = keras.Input(tuple(features_out.shape[1:]), name="features")
    head = keras.Model(head_in, _apply(head_layers, head_in), name=f"{architecture}_head")
    return BuiltModel(model, features, head, backbone, weights)


def _application(spec: ArchSpec, input_size: int, weights: str | None) -> keras.Model:
    assert spec.application is not None
    try:
        full = spec.application(include_top=False, weights=weights, input_shape=(input_size, input_size, 3))
        if spec.truncate_after_add is None:
            return full
        # By position, not by name: Keras numbers layer names per process ("add_5" may be "add_17").
        adds = [layer for layer in full.layers if isinstance(layer, keras.layers.Add)]
        return keras.Model(full.input, adds[spec.truncate_after_add].output, name=f"{spec.name}_backbone")
    except Exception as exc:
        if weights == "imagenet":
            raise WeightsNotFoundError(
                f"ImageNet weights for {spec.name} could not be downloaded ({exc}). "
                f"Offline: put {local_weights_name(spec.name)} in {WEIGHTS_DIR_ENV}, "
                "or use --weights none."
            ) from exc
        raise


def _normalization(mode: str) -> keras.layers.Layer:
    if mode == "unit":
        return keras.layers.Rescaling(1 / 255.0, name="normalize")
    if mode == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")
    # Caffe mode is BGR minus ImageNet means. Inputs are gray replicated to 3 channels, so the
    # channel order is immaterial and a per-channel mean subtraction is exact. Rescaling with a
    # per-channel offset, not Normalization: tf2onnx turned Normalization's mean/variance into
    # extra graph inputs, so the exported VGG models could not run.
    return keras.layers.Rescaling(1.0, offset=[-103.939, -116.779, -123.68], name="normalize")


def _small_cnn(x: keras.KerasTensor) -> keras.KerasTensor:
    """Four conv blocks, narrow at full resolution: ~75 M multiply-adds at 128 px, so an epoch
    of 4,000 films takes about a minute on 2 CPU cores and a prediction a few ms."""
    for i, filters in enumerate((16, 32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # momentum 0.9: moving statistics settle within an epoch of ~130 steps.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="conv_last")(x)


def _vgg_bn(
    convs_per_block: tuple[int, ...], name: str, *, include_top: bool, weights: str | None, input_shape: tuple
) -> keras.Model:
    """VGG (16: 2,2,3,3,3 convolutions; 19: 2,2,4,4,4) with BatchNorm, as a headless backbone."""
    if weights is not None:
        raise ValueError(f"{name} has no pretrained weights; it trains from scratch (--weights none)")
    assert not include_top
    inputs = keras.Input(input_shape)
    x = inputs
    for block, (convs, filters) in enumerate(zip(convs_per_block, (64, 128, 256, 512, 512), strict=True), start=1):
        for conv in range(1, convs + 1):
            layer = f"block{block}_conv{conv}"
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=layer)(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"{layer}_bn")(x)
            x = keras.layers.Activation("relu", name=f"{layer}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=f"{name}_backbone")


def _head_layers(spec: ArchSpec) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    for i, units in enumerate(spec.head_units):
        layers.append(keras.layers.Dense(units, activation="relu", name=f"head_dense{i}"))
        if i == 0:
            layers.append(keras.layers.Dropout(spec.dropout, name="head_dropout"))
    if not spec.head_units:
        layers.append(keras.layers.Dropout(spec.dropout, name="head_dropout"))
    layers.append(keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="pneumonia"))
    return layers


def _apply(layers: list[keras.layers.Layer], x: keras.KerasTensor) -> keras.KerasTensor:
    for layer in layers:
        x = layer(x)
    return x


def set_trainable(built: BuiltModel, stage: str) -> None:
    """head: backbone frozen; partial: the spec's last layers open; full: everything."""
    if built.backbone is None:
        return
    spec = ARCHITECTURES[built.model.name]
    built.backbone.trainable = stage != "head"
    if stage == "partial":
        for layer in built.backbone.layers:
            layer.trainable = layer.name in spec.partial_unfreeze
