"""Scale-out helpers on existing engines; each submodule imports its framework, this package nothing.

* :mod:`kldiv.distributed.torch`: ``torch.distributed`` — ``VocabParallelKLDivergence`` and
  ``VocabParallelJSDivergence`` (logits sharded over the vocabulary, global log-sum-exp by all-reduce),
  and ``global_num_items`` (the global denominator for data parallel).
* :mod:`kldiv.distributed.jax`: the same under ``jit`` / ``shard_map`` with ``lax.pmax`` / ``lax.psum``
  over named mesh axes.

Both share one program, :mod:`kldiv.distributed._vocab`, whose per-element terms and gradients are
those of :mod:`kldiv.core.grads`.
"""
