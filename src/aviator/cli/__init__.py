"""The ``aviator`` command. It sits on top of everything; nothing imports it.

Commands MUST exit with codes a script can trust (0 ok, 1 failed/not found/timed out, 2 usage),
print errors to stderr in one precise line (plus field causes), and never print secrets.
"""
