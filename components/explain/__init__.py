"""Explanations of what is served: Shapley-value word attributions of the ONNX model, the pages that
show them, and the evaluation report (most confident errors, correct answers, deletion test)."""
