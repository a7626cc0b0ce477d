"""Builders and weights resolution (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.cli import main
from ml.training.architectures import WeightsNotFoundError, build_model, local_weights_name, resolve_weights

pytestmark = pytest.mark.slow  # builds Keras models (TensorFlow)


def test_missing_weights_name_the_expected_file(tmp_path: Path) -> None:
    expected = tmp_path / "vgg19_imagenet_notop.weights.h5"
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("vgg19", str(tmp_path))
    assert str(expected) in str(info.value) and "--weights none" in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="not found: .*nope.h5"):
        resolve_weights("xception", str(tmp_path / "nope.h5"))
    with pytest.raises(WeightsNotFoundError, match=str(expected)):
        resolve_weights("vgg19", "local", tmp_path)


def test_weights_are_found_in_a_local_directory(tmp_path: Path) -> None:
    (tmp_path / local_weights_name("xception")).write_bytes(b"stub")
    found = tmp_path / "xception_imagenet_notop.weights.h5"
    assert resolve_weights("xception", "imagenet", tmp_path) == str(found)
    assert resolve_weights("xception", str(tmp_path)) == str(found)
    assert resolve_weights("vgg16", "auto", tmp_path) is None  # comparison falls back to scratch
    assert resolve_weights("vgg16", "none", tmp_path) is None


def test_train_command_fails_clearly_when_weights_are_missing(
    tmp_path: Path, dataset_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--arch",
            "resnet50v2",
            "--weights",
            str(tmp_path),
            "--data-dir",
            str(dataset_root),
            "--output-root",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    assert "resnet50v2_imagenet_notop.weights.h5" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_vgg19_head_follows_the_source_recipe() -> None:
    built = build_model("vgg19", input_size=32, weights=None, seed=0)
    head = [layer for layer in built.head.layers if layer.name.startswith(("head", "flatten", "pneumonia"))]
    assert [getattr(layer, "units", getattr(layer, "rate", None)) for layer in head] == [4608, 0.2, 1152, 1]
    assert built.model.output_shape == (None, 1)


@pytest.mark.parametrize(("arch", "convs"), [("vgg16_bn", 13), ("vgg19_bn", 16)])
def test_batchnorm_vggs_keep_vgg_layout_and_train_from_scratch_only(arch: str, convs: int, tmp_path: Path) -> None:
    """The from-scratch VGGs: VGG's convolutions (and names, so the partial stage opens the same
    layers), each followed by BatchNorm; asking for ImageNet weights is refused with a reason."""
    import keras

    built = build_model(arch, input_size=32, weights=None, seed=0)
    assert built.backbone is not None
    layers = built.backbone.layers
    conv_names = [layer.name for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(conv_names) == convs and conv_names[-1] == f"block5_conv{3 if arch == 'vgg16_bn' else 4}"
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in layers) == convs
    assert built.model.output_shape == (None, 1)
    for weights in ("imagenet", "local", str(tmp_path)):
        with pytest.raises(WeightsNotFoundError, match="trained from scratch"):
            resolve_weights(arch, weights, tmp_path)
    assert resolve_weights(arch, "auto", tmp_path) is None


def test_normalisation_is_inside_the_model() -> None:
    import numpy as np

    built = build_model("cnn", input_size=32, weights=None, seed=0)
    assert built.model.layers[1].name == "normalize"
    x = np.full((1, 32, 32, 3), 255.0, dtype=np.float32)
    assert float(built.model.layers[1](x).numpy().max()) == pytest.approx(1.0)


def test_partial_stage_opens_only_the_named_layers() -> None:
    from ml.training.architectures import set_trainable

    built = build_model("vgg19", input_size=32, weights=None, seed=0)
    set_trainable(built, "partial")
    assert built.backbone is not None
    opened = sorted(layer.name for layer in built.backbone.layers if layer.trainable and layer.weights)
    assert opened == ["block5_conv3", "block5_conv4"]
    set_trainable(built, "head")
    assert not built.backbone.trainable
    set_trainable(built, "full")
    assert all(layer.trainable for layer in built.backbone.layers)


@pytest.mark.parametrize("mode", ["unit", "tf", "caffe"])
def test_every_normalisation_exports_to_onnx_with_the_image_as_only_input(mode: str, tmp_path: Path) -> None:
    import keras
    import numpy as np
    import onnxruntime as ort

    from ml.training.architectures import _normalization

    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, _normalization(mode)(inputs))
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "n.onnx"), format="onnx", verbose=False)
    session = ort.InferenceSession(str(tmp_path / "n.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    np.testing.assert_allclose(session.run(None, {"image": x})[0], expected, atol=1e-4)
    if mode == "caffe":
        np.testing.assert_allclose(expected[..., 0], x[..., 0] - 103.939, atol=1e-3)


def test_a_pooling_margin_pools_the_inner_cells_and_a_warm_start_without_it_loads(tmp_path: Path) -> None:
    """xception_mid with pool_margin 1: the pooling averages the inner cells of the last feature map, the head
    and features models share that, and weights saved without the (weightless) crop load into it."""
    import numpy as np

    from ml.training.export import cam_head

    plain = build_model("xception_mid", input_size=96, weights=None, seed=0, pretrained=True)
    plain.model.save_weights(tmp_path / "plain.weights.h5")
    cropped = build_model("xception_mid", input_size=96, weights=None, seed=1, pretrained=True, pool_margin=1)
    cropped.model.load_weights(tmp_path / "plain.weights.h5")
    head = cam_head(cropped.model)
    assert head is not None and tuple(head.feature_map.shape[1:3]) == (4, 4)  # 6 x 6 less its outer ring
    assert head.extent == (1 / 6, 1 / 6, 5 / 6, 5 / 6)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    maps = cropped.backbone.predict(plain.model.layers[1](x), verbose=0)  # normalise, then the backbone
    pooled = cropped.features.predict(x, verbose=0)
    np.testing.assert_allclose(pooled, maps[:, 1:-1, 1:-1].mean(axis=(1, 2)), atol=1e-4)
    with pytest.raises(ValueError, match="pooling margin"):
        build_model("vgg19", input_size=64, weights=None, seed=0, pool_margin=1)
