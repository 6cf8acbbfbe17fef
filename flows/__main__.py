"""``python -m flows``: the same as ``make ui`` (``python -m flows.ui``)."""

from __future__ import annotations

from flows.ui import main

raise SystemExit(main())
