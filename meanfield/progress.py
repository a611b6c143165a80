"""Progress bars for long work, in the library and the command line (tqdm on stderr).

A bar appears only after a second of work and is erased when the work ends, so a quick
call prints nothing and stdout stays clean.  ``MEANFIELD_NO_PROGRESS=1`` (scripts, the
test suite) turns every bar off, and so does a stderr that is neither a terminal nor a
notebook.
"""

from __future__ import annotations

import os
import sys


def quiet() -> bool:
    """True when no bar should draw: MEANFIELD_NO_PROGRESS is set (to anything but "" or
    "0"), or stderr is neither a terminal nor a notebook (a log file would fill with
    carriage-return updates)."""
    if os.environ.get("MEANFIELD_NO_PROGRESS", "") not in ("", "0"):
        return True
    try:
        interactive = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        interactive = False
    return not (interactive or "ipykernel" in sys.modules)


def bar(iterable=None, total=None, desc=None, unit="it", enabled=True):
    """A tqdm bar shown after one second of work, erased at the end; a disabled bar (the
    caller's ``progress=False`` or MEANFIELD_NO_PROGRESS) still counts but draws nothing."""
    from tqdm.auto import tqdm  # a widget in notebooks, text in a terminal

    return tqdm(iterable, total=total, desc=desc, unit=unit, delay=1.0, leave=False,
                file=sys.stderr, dynamic_ncols=True, disable=not enabled or quiet())
