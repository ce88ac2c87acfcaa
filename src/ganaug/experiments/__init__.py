"""Experiment definitions shared by the pipeline stages and studies: the augmentation arms (`arms`)."""
