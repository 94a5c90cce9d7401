"""Placement: devices, CEL, allocation, portability, capacity planning.

Pure: imports only ``aviator.api`` and libraries; no store, no sockets, no processes. The
controllers feed it the fleet and the claims and apply what it decides.
"""
