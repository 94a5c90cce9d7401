"""aviator: an intent-driven, vendor-neutral, governed control plane for AI workloads.

Layers, bottom to top (held by import-linter contracts in ``pyproject.toml``):

- ``api``: typed kinds, validation, defaults, schema generation. Pure data, no I/O.
- ``sim``: the vLLM-compatible inference simulator; stands alone.
- ``store``: persistence and watch (SQLite in the embedded home).
- ``runtime``: engine processes (local supervisor) and engine adapters.
- ``controllers``: informers, work queue, one reconciler per kind.
- ``gateway``: the OpenAI-compatible data path; learns state only through a watch.
- ``plane``: composes the Control API, controllers, runtime and gateway into ``aviator up``.
- ``cli``: the ``aviator`` command; nothing imports it.
"""

__version__ = "0.1.0"
