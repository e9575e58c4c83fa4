"""Training: the experiment that builds a run (``experiment``), the trainer, model/LoRA loading and tokenization."""
