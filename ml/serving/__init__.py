"""What the portal and the worker need to score a film: no TensorFlow, no training code.

``decode`` (bytes -> grayscale pixels, the upload limits), ``preprocessing`` (pixels -> the model's input,
shared with training), ``gate`` (the input gate run before every score), ``inference`` (the ONNX
``Predictor``), ``heatmap`` (drawing its class activation maps), ``artifacts`` (the model folder and its
manifest), ``runtime`` (execution provider, session options, device), ``variants`` (the int8/bf16 variant
checked on this CPU) and ``films`` (a labelled film folder, which the variant check and the promotion gate
read). Nothing here imports ``ml.training``.
"""
