"""Tests of the ``kldiv`` command line."""
