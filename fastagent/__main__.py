"""``python -m fastagent``: the same as the ``fastagent`` command."""

from fastagent.cli import main

main()
