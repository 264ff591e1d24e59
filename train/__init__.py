"""Pretraining and fine-tuning data and loops: corpora, token packing, masking."""
