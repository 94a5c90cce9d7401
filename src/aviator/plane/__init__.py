"""The embedded plane: composes store, Control API, controllers, runtime and gateway.

It MUST own every process it starts and stop them all on a clean shutdown, generate the admin
token into the data directory (mode 0600) and never log it, and refuse to run twice on one data
directory. It MUST NOT contain domain logic: that lives in the packages it wires together.
"""
