"""The ``kldiv`` command line: ``kldiv Y_TRUE Y_PRED [options]`` (entry point :func:`kldiv.cli.main.main`).

Modules: :mod:`~kldiv.cli.parser` (arguments and ``--help``), :mod:`~kldiv.cli.inputs` (inline values
and ``.npy`` / ``.csv`` / ``.json`` files), :mod:`~kldiv.cli.compute` (the library calls) and
:mod:`~kldiv.cli.report` (the table and the JSON object). Importing it imports NumPy only.
"""
