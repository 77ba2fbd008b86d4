"""Quantization: post-training (:mod:`.posttrain`, calibration, per-channel scales, bias correction,
equalisation), learned rounding (:mod:`.adaround`), quantization-aware training (:mod:`.qat`) and the
small optimiser they share (:mod:`.optim`). :func:`.load.load_model` is the one way a CLI argument becomes
a quantized Model (importing and quantizing as needed)."""
