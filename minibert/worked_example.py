"""The worked example of docs/MATH.md: its code is minibert/explain/worked_example.py, part of the walk-through
package; this module keeps the names importable from here.
"""

from .explain.worked_example import (  # noqa: F401
    DOCUMENT,
    END,
    LR,
    REFRESH,
    SEED,
    START,
    section_diff,
    worked_example,
    worked_example_markdown,
    write_section,
)
