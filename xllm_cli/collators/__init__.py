"""Collators: training samples to batches (see ``base`` for the contract)."""
