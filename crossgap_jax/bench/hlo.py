"""Instruction counts of an optimised HLO module's text (``compiled.as_text()``).

Used to compare two compiled programs that should do the same array work, e.g. OTI/OVI
with and without the progress bar's host callback (``benchmarks/bench_progress.py`` and
``tests/inversion/test_inversion_progress.py``).
"""

from __future__ import annotations

import collections
import re

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%\S+ = (.*?) ([a-z][\w-]*)\(", re.M)
_ARRAY = re.compile(r"^(\w+)\[([\d,]*)\]")


def opcodes(hlo: str) -> collections.Counter:
    """How many instructions of each opcode (``fusion``, ``dot``, ``custom-call``, ...)."""
    return collections.Counter(m.group(2) for m in _INSTRUCTION.finditer(hlo))


def array_ops(hlo: str, min_elements: int = 3) -> collections.Counter:
    """``(opcode, dtype, dims)`` of every instruction whose result is one array of at least
    ``min_elements`` elements (tuples and scalars are left out)."""
    out: collections.Counter = collections.Counter()
    for m in _INSTRUCTION.finditer(hlo):
        a = _ARRAY.match(m.group(1))
        if a is None:
            continue
        size = 1
        for d in a.group(2).split(","):
            size *= int(d) if d else 1
        if size >= min_elements:
            out[(m.group(2), a.group(1), a.group(2))] += 1
    return out
