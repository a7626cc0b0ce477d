"""How a model is made: configs, data splits and batches, architectures, training, evaluation, Platt
calibration, the ONNX export, packaging an artifact and its model card, the architecture comparison, and
fitting the input gate. Imports ``ml.serving`` (one preprocessing path and one manifest format for both),
never the other way round.
"""
