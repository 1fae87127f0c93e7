"""Behaviour-anomaly pipeline: ingest, clean, validate, features, train, evaluate, score."""

__version__ = "0.1.0"
