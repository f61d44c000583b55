"""semseg: semantic segmentation with convolutional networks.

The package reads data -> models -> engine -> inference: ``semseg.data`` (datasets, label
files, augmentation), ``semseg.models`` (blocks, backbones, model families, the table of
names), ``semseg.engine`` (losses, metrics, training, evaluation), ``semseg.inference``
(the predictor every consumer runs a model through, TTA, tiling, ONNX, files, video,
drivable space). ``semseg.checkpoint`` joins training to inference. Importing it changes no
global state.
"""

__version__ = "0.1.0"
