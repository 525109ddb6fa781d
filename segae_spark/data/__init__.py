"""Data sources: the synthetic transaction generator (the demo's default data)."""

from segae_spark.data.synthetic import generate_transactions

__all__ = ["generate_transactions"]
