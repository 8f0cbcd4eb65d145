"""The ``kldiv`` command line: ``kldiv Y_TRUE Y_PRED [options]`` (entry point :func:`kldiv.cli.main.main`).

Modules: :mod:`~kldiv.cli.parser` (arguments and ``--help``), :mod:`~kldiv.cli.inputs` (inline values
and ``.npy`` / ``.csv`` / ``.json`` files, ``--normalize``), :mod:`~kldiv.cli.compute` (the library
calls) and :mod:`~kldiv.cli.report` (the table and the JSON object). ``kldiv bench`` and ``kldiv bench
fused-linear`` are :mod:`~kldiv.cli.bench_kl` and :mod:`~kldiv.cli.bench_fused` (their parsers and
up-front checks, :mod:`~kldiv.cli.arguments`; their tables, :mod:`~kldiv.cli.tables`), imported only
for those commands; they only parse and print, the measuring is :mod:`kldiv.bench`'s. Importing
``kldiv.cli`` imports NumPy only.
"""
