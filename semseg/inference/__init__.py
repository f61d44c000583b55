"""Running a trained model: the predictor (the one road from a checkpoint to pixels), TTA and
sliding window, BatchNorm folding, the ONNX model and export, file, video and drivable-space
pipelines."""
