"""The math of kldiv, written once against an array namespace ``xp``.

Modules here import only the standard library; every array operation goes through the ``xp``
argument (an array-API namespace such as ``numpy``, ``array_api_compat.torch`` or ``jax.numpy``).
"""
