"""The tests tree mirrors the zrep package; real processes live in tests/integration/.

`pytest -m "not processes"` is the quick loop (no node process is started);
tests/stores.py and the other helpers here are importable from every test.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
