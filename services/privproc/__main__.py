"""``python -m privproc``: the same as the ``privproc`` command."""

from privproc.cli import main

if __name__ == "__main__":
    main()
