"""The Python host's modules (main.py is the entry point)."""

import sys
from pathlib import Path

_CHECKOUT_BINDING = Path(__file__).resolve().parent.parent.parent.parent / "bindings" / "python"
if (_CHECKOUT_BINDING / "wings_backup" / "__init__.py").is_file():
    # Run from a source checkout: use the binding that sits beside this host.
    sys.path.insert(0, str(_CHECKOUT_BINDING))

import wings_backup as wb  # noqa: E402

__all__ = ["wb"]
