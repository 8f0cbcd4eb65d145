"""Memory-bounded large-vocabulary divergences: chunked over tokens, and fused with the output
projection (``hidden @ weight.T``) so that the ``tokens × vocab`` logits are never materialized.

``kldiv.fused.torch`` (PyTorch) and ``kldiv.fused.jax`` (JAX) import their framework; this package
imports nothing.
"""
