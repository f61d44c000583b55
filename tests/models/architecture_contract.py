"""What every segmentation architecture must do; each architecture's test subclasses this.

A subclass names the model and a tiny configuration, for example::

    class TestUNet(ArchitectureContract):
        model_name = "unet"
        model_kwargs: ClassVar = {"base_channels": 4, "depth": 2}

and pytest runs every ``test_*`` method below for it (``ClassVar`` keeps ruff's RUF012 quiet
about a mutable class attribute). This class's own name does not start
with ``Test``, so pytest does not collect it by itself.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from semseg.checkpoint import Checkpoint
from semseg.inference.fuse import (
    FusedConv2d,
    fuse_conv_activation,
    fuse_conv_bn,
    onednn_fusion_available,
)
from semseg.labels import LabelSet
from semseg.models import create_model, model_arguments
from semseg.models.contract import SegmentationModel

ODD_SIZE = (97, 131)
"""A size that is a multiple of no output stride: exercises padding and cropping."""
GOLDEN_FILE = Path(__file__).with_name("golden_outputs.json")
"""Per contract class: statistics of the seeded model's logits on a seeded input. Rewritten
by running the contract tests with SEMSEG_WRITE_GOLDEN=1 (then review the diff)."""


class ArchitectureContract:
    model_name: ClassVar[str]
    model_kwargs: ClassVar[dict[str, Any]] = {}
    num_classes: ClassVar[int] = 3
    input_size: ClassVar[tuple[int, int]] = (32, 48)
    has_encoder: ClassVar[bool] = True
    routes_by_argmax: ClassVar[bool] = False
    """True for decoders that unpool with max-pooling indices (SegNet)."""
    pre_activation: ClassVar[bool] = False
    """True for pre-activation networks (BatchNorm, ReLU, then convolution: FC-DenseNet), whose
    BatchNorms have no convolution just before them to fold into and stay after fusion, and
    whose activations follow no convolution to fuse into."""

    def build(self) -> nn.Module:
        torch.manual_seed(0)
        return create_model(self.model_name, self.num_classes, **self.model_kwargs)

    def images(self, batch: int, size: tuple[int, int], seed: int = 1) -> torch.Tensor:
        """(batch, in_channels, *size) float32 standard normal images."""
        in_channels = self.model_kwargs.get("in_channels", 3)
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch, in_channels, *size, generator=generator)

    def test_every_argument_but_num_classes_has_a_default(self) -> None:
        arguments = model_arguments(self.model_name)
        assert "num_classes" in arguments
        required = [
            k for k, v in arguments.items() if v is inspect.Parameter.empty and k != "num_classes"
        ]
        assert required == []

    @pytest.mark.parametrize("size_name", ["input_size", "odd"])
    def test_logits_have_input_resolution(self, size_name: str) -> None:
        size = self.input_size if size_name == "input_size" else ODD_SIZE
        model = self.build().eval()
        with torch.no_grad():
            logits = model(self.images(2, size))
        assert logits.shape == (2, self.num_classes, *size)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()

    def test_backward_gives_finite_gradients_to_every_trainable_parameter(self) -> None:
        model = self.build().train()
        images = self.images(2, ODD_SIZE).requires_grad_()
        target = torch.randint(0, self.num_classes, (2, *ODD_SIZE))
        F.cross_entropy(model(images), target).backward()
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                assert parameter.grad is not None, f"{name} gets no gradient"
                assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert images.grad is not None
        assert images.grad.abs().sum() > 0

    def test_bottom_right_logits_depend_on_the_image(self) -> None:
        # Fails when padding to the output stride and cropping back leave the last row or
        # column of logits filled with constants.
        model = self.build().eval()
        images = self.images(1, ODD_SIZE).requires_grad_()
        model(images)[..., -1, -1].sum().backward()
        assert images.grad is not None
        assert images.grad[..., -8:, -8:].abs().sum() > 0

    def test_eval_forward_is_deterministic_and_per_sample(self) -> None:
        model = self.build().eval()
        images = self.images(3, self.input_size)
        with torch.no_grad():
            first, second = model(images), model(images)
            alone = model(images[1:2])
        assert torch.equal(first, second)
        # Eval mode must not use batch statistics: a sample's logits ignore its batch mates.
        torch.testing.assert_close(alone, first[1:2], rtol=1e-4, atol=1e-5)

    def test_trains_with_batch_size_one(self) -> None:
        model = self.build().train()
        target = torch.randint(0, self.num_classes, (1, *self.input_size))
        logits = model(self.images(1, self.input_size))
        F.cross_entropy(logits, target).backward()
        assert logits.shape == (1, self.num_classes, *self.input_size)

    def test_encoder_is_a_freezable_submodule(self) -> None:
        model = self.build()
        if not self.has_encoder:
            pytest.skip(f"{self.model_name} has no encoder")
        assert isinstance(model.encoder, nn.Module)
        encoder_ids = {id(p) for p in model.encoder.parameters()}
        assert encoder_ids, "the encoder has no parameters"
        assert encoder_ids < {id(p) for p in model.parameters()}
        model.encoder.requires_grad_(False)
        logits = model.train()(self.images(2, self.input_size))
        logits.sum().backward()
        for name, parameter in model.named_parameters():
            assert (parameter.grad is None) == (id(parameter) in encoder_ids), name

    def test_torch_export_with_dynamic_size_matches_eager(self) -> None:
        model = self.build().eval()
        dynamic = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}
        exported = torch.export.export(
            model, (self.images(2, self.input_size),), dynamic_shapes=(dynamic,)
        )
        images = self.images(3, ODD_SIZE, seed=2)
        with torch.no_grad():
            expected = model(images)
        torch.testing.assert_close(exported.module()(images), expected, rtol=1e-4, atol=1e-5)

    def test_onnx_export_with_dynamic_size_matches_eager(self, tmp_path: Path) -> None:
        model = self.build().eval()
        path = tmp_path / "model.onnx"
        axes = {0: "batch", 2: "height", 3: "width"}
        with warnings.catch_warnings():
            # The TorchScript-based exporter warns that it is deprecated; the dynamo exporter
            # needs onnxscript, which this project does not install.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (self.images(2, self.input_size),),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": axes, "logits": axes},
            )
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        images = self.images(1, ODD_SIZE, seed=2)
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images).numpy()
        assert logits.shape == expected.shape
        assert np.abs(logits - expected).max() < 1e-4

    def test_create_model_names_an_unknown_argument(self) -> None:
        with pytest.raises(ValueError, match="no_such_argument"):
            create_model(self.model_name, self.num_classes, no_such_argument=1)

    def test_exposes_the_model_contract(self) -> None:
        model = self.build()
        assert isinstance(model, SegmentationModel)
        assert model.num_classes == self.num_classes
        assert isinstance(model.output_stride, int) and model.output_stride >= 1
        assert (getattr(model, "encoder", None) is not None) == self.has_encoder

    def test_output_stride_is_the_coarsest_feature_stride(self) -> None:
        # At an input of (2s, 3s) pixels the coarsest feature map (global pooling aside) is
        # 2 x 3, and the model accepts an input of just one stride.
        model = self.build().eval()
        stride = model.output_stride
        sizes: list[tuple[int, int]] = []

        def record(module: nn.Module, args: Any, output: Any) -> None:
            for value in output if isinstance(output, tuple) else (output,):
                is_map = isinstance(value, torch.Tensor) and value.ndim == 4
                if is_map and value.shape[-2:] != (1, 1):
                    sizes.append(tuple(value.shape[-2:]))

        handles = [m.register_forward_hook(record) for m in model.modules()]
        with torch.no_grad():
            model(self.images(1, (2 * stride, 3 * stride)))
        for handle in handles:
            handle.remove()
        assert min(h for h, _ in sizes) == 2
        assert min(w for _, w in sizes) == 3
        with torch.no_grad():
            logits = model(self.images(1, (stride, stride)))
        assert logits.shape == (1, self.num_classes, stride, stride)

    def test_fused_model_equals_eager_and_keeps_no_batchnorm(self) -> None:
        model = self.build().eval()
        _randomise_batchnorm(model)
        fused = fuse_conv_bn(model)
        left = [name for name, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.pre_activation:
            assert left == []
        images = self.images(2, ODD_SIZE)
        with torch.no_grad():
            eager = model(images)
            # float32 rounding of the folded weights grows with the logits' magnitude
            scale = float(eager.abs().max())
            fused_logits = fused(images)
        if not self.routes_by_argmax:
            torch.testing.assert_close(fused_logits, eager, rtol=1e-3, atol=1e-4 * scale)
            return
        # Max-pooling indices route values through the decoder: where two inputs of a window
        # are within rounding of each other, folding may flip which one wins and move a value.
        close = torch.isclose(fused_logits, eager, rtol=1e-3, atol=1e-4 * scale)
        assert close.float().mean() > 0.99

    @pytest.mark.skipif(not onednn_fusion_available(), reason="this PyTorch has no oneDNN")
    def test_activation_fusion_equals_the_folded_model_and_fuses_something(self) -> None:
        model = self.build().eval()
        _randomise_batchnorm(model)
        folded = fuse_conv_bn(model).to(memory_format=torch.channels_last)
        fused = fuse_conv_activation(copy.deepcopy(folded))
        assert any(isinstance(m, FusedConv2d) for m in fused.modules()) != self.pre_activation
        images = self.images(2, ODD_SIZE).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = folded(images)
            scale = float(expected.abs().max())
            close = torch.isclose(fused(images), expected, rtol=1e-4, atol=1e-5 * scale)
        # the same arithmetic in one call; only argmax-routed values (pooling indices) may move
        assert close.float().mean() > (0.99 if self.routes_by_argmax else 0.9999)

    def test_seeded_output_matches_the_golden_statistics(self) -> None:
        model = self.build().eval()
        with torch.no_grad():
            logits = model(self.images(1, self.input_size, seed=3)).double()
        observed = {
            "mean": float(logits.mean()),
            "abs_mean": float(logits.abs().mean()),
            "std": float(logits.std()),
            "first": [float(v) for v in logits.flatten()[:4]],
        }
        key = type(self).__name__
        golden = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.is_file() else {}
        if os.environ.get("SEMSEG_WRITE_GOLDEN"):
            golden[key] = observed
            GOLDEN_FILE.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        assert key in golden, f"no golden output for {key}; run with SEMSEG_WRITE_GOLDEN=1"
        expected = golden[key]
        for name in ("mean", "abs_mean", "std"):
            assert math.isclose(observed[name], expected[name], rel_tol=1e-3, abs_tol=1e-5), name
        np.testing.assert_allclose(observed["first"], expected["first"], rtol=1e-3, atol=1e-5)

    def test_checkpoint_round_trip_gives_the_same_logits(self, tmp_path: Path) -> None:
        model = self.build().eval()
        _randomise_batchnorm(model)
        labels = LabelSet(
            names=tuple(f"class{i}" for i in range(self.num_classes)),
            colours=tuple((i, 2 * i, 3 * i) for i in range(self.num_classes)),
        )
        checkpoint = Checkpoint(
            model_name=self.model_name,
            model_args=dict(self.model_kwargs),
            labels=labels,
            mean=(0.5, 0.4, 0.3),
            std=(0.2, 0.25, 0.3),
            state_dict=model.state_dict(),
        )
        checkpoint.save(tmp_path / "model.pt")
        loaded = Checkpoint.load(tmp_path / "model.pt")
        assert (loaded.model_name, loaded.model_args) == (self.model_name, self.model_kwargs)
        assert loaded.labels == labels and loaded.mean == (0.5, 0.4, 0.3)
        images = self.images(1, self.input_size)
        with torch.no_grad():
            torch.testing.assert_close(loaded.build_model()(images), model(images))

    def test_input_scale_keeps_the_contract(self) -> None:
        torch.manual_seed(0)
        inner = self.build()
        scaled = create_model(self.model_name, self.num_classes, input_scale=0.5,
                              **self.model_kwargs).eval()  # fmt: skip
        assert scaled.num_classes == self.num_classes
        assert scaled.output_stride == 2 * inner.output_stride
        assert (getattr(scaled, "encoder", None) is not None) == self.has_encoder
        size = (2 * scaled.output_stride, 2 * scaled.output_stride + 6)
        with torch.no_grad():
            logits = scaled(self.images(1, size))
        assert logits.shape == (1, self.num_classes, *size)


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so that folding is exercised."""
    generator = torch.Generator().manual_seed(5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            shape = module.running_mean.shape
            module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
            if module.affine:
                module.weight.data.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.data.copy_(0.1 * torch.randn(shape, generator=generator))
