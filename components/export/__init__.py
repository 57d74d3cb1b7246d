"""The served model: ONNX export, int8 quantization, parity, scoring, the predictor, its integrity check."""
