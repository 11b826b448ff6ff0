"""Storage: where values live and how they get there.

- :mod:`~taskflow_exclusive.storage.filesystems`: storage URLs and the fsspec
  filesystem (and credentials) each one means;
- :mod:`~taskflow_exclusive.storage.atomic`: create-if-absent and complete-or-nothing
  writes, per filesystem (the primitive claims on object stores rest on);
- :mod:`~taskflow_exclusive.storage.layout`: the names of every object we write;
- :mod:`~taskflow_exclusive.storage.digests`: ``blake3:``/``sha256:`` digests and how records carry them;
- :mod:`~taskflow_exclusive.storage.store`: :class:`Store`, a base URL with streaming,
  hashing writes and errors that say what to fix;
- :mod:`~taskflow_exclusive.storage.cleanup`: finding and removing leftovers.
"""
