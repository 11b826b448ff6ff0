"""Formats: how values become bytes and back.

- :mod:`~taskflow_exclusive.formats.serializers`: the serializer registry (JSON,
  text, bytes, Parquet, Arrow, NumPy, pickle, ...) and the choice by type, which
  refuses a lossy one;
- :mod:`~taskflow_exclusive.formats.compression`: fsspec codecs around a stream.
"""
