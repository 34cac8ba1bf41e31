"""``python -m zergling``: the same as the ``zergling`` command."""

from .cli import main

raise SystemExit(main())
