"""Persistence of objects with Kubernetes semantics, and watches over them.

The store MUST give every write a new, strictly increasing resourceVersion, refuse stale updates
with ``Conflict``, keep status and spec writes apart (status never bumps generation), honour
finalizers and ownerReferences, and deliver watch events in resourceVersion order.
It MUST NOT validate or default user input (that is ``api.admission``), know about controllers,
or block the event loop: blocking I/O runs on the store's own thread.
"""

from aviator.store.protocol import Store, WatchEvent
from aviator.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "WatchEvent"]
