"""Models: loading base and fine-tuned models, training, adaptation, distillation, evaluation, sweeps."""
