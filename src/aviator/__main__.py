"""``python -m aviator …`` is the ``aviator`` command (engines are spawned this way)."""

from aviator.cli.main import main

if __name__ == "__main__":
    main()
