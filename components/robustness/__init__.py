"""Robustness checks in the style of CheckList: invariance tests generated from the test split.

perturb.py changes test texts in ways that must not change their label (a typo, casing, punctuation,
whitespace, another person's or city's name); invariance.py runs the originals and the perturbed texts
through the served (ONNX) predictor and counts the predictions that stayed the same.
"""
