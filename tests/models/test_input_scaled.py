"""The generic input_scale wrapper: sizes, the 2x2-average downscale, ONNX export."""

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semseg.models import create_model
from semseg.models.input_scaled import InputScaled


class Recorder(nn.Module):
    """Returns its input (as 3 'classes') and keeps it, to inspect what the network saw."""

    num_classes, output_stride = 3, 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x


def test_half_scale_downscale_is_a_2x2_average_and_output_is_input_size():
    recorder = Recorder()
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).reshape(2, 3, 6, 8)
    out = InputScaled(recorder, 0.5)(x)
    expected = x.reshape(2, 3, 3, 2, 4, 2).mean(dim=(3, 5))
    assert torch.allclose(recorder.seen, expected)
    assert out.shape == x.shape


def test_odd_sizes_come_back_to_input_size():
    model = create_model("unet", 5, input_scale=0.5, base_channels=4, depth=2)
    assert isinstance(model, InputScaled)
    assert model(torch.randn(1, 3, 97, 131)).shape == (1, 5, 97, 131)
    assert model.encoder is model.model.encoder


@pytest.mark.parametrize(("scale", "stride"), [(0.5, 8), (0.75, 6), (2.0, 2)])
def test_contract_attributes_are_the_inner_models_in_input_pixels(scale, stride):
    model = create_model("unet", 5, input_scale=scale, base_channels=4, depth=2)
    assert model.num_classes == 5
    assert model.output_stride == stride  # ceil(4 / scale)


def test_logits_are_the_inner_logits_resized():
    inner = create_model("unet", 4, base_channels=4, depth=2).eval()
    wrapped = InputScaled(inner, 0.5).eval()
    x = torch.randn(1, 3, 40, 56)
    small = F.interpolate(x, size=(20, 28), mode="bilinear", align_corners=False)
    expected = F.interpolate(inner(small), size=(40, 56), mode="bilinear", align_corners=False)
    assert torch.allclose(wrapped(x), expected, atol=1e-6)


def test_exports_to_onnx_with_dynamic_size(tmp_path):
    model = create_model("unet", 4, input_scale=0.5, base_channels=4, depth=2).eval()
    path = tmp_path / "scaled.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 96),),
        path,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
        opset_version=17,
        dynamo=False,
    )
    x = torch.randn(2, 3, 72, 100)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, model(x).numpy(), atol=1e-4)


def test_scale_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="input_scale"):
        InputScaled(nn.Identity(), 0.0)
