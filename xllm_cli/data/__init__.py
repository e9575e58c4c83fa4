"""Datasets: turning a source into raw samples (``download``) and raw samples into training samples (``train``)."""
