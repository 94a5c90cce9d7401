"""The aviator API: kinds as typed models, validation, defaults and schema generation.

This package is the ground floor. It MUST stay pure: typed data and functions over it, no I/O, no
clocks read implicitly (callers pass ``now``), no imports from any other aviator package. Everything
else may import it.
"""
