"""Several tile sets read as one (``sarkit train --data A --data B``).

Each set keeps its folder: a manifest row's paths stay relative to the set it comes from, and its split is the one
that set's manifest gives. The sets must be tiles of the same kind, or the model would learn from numbers that
mean different things: the same tile size, SAR and optical bands, classes and fixed normalisation ranges
(``check_compatible``; a mismatch is one ``InputError`` naming both folders). Only the optical DN offset may differ
(Sentinel-2 processing baselines): each set's tiles are read with its own.

Tile ids are unique across the sets: with more than one set every id is prefixed by the set's name
(``set_names``: its folder name, or its path below the folders' common parent when two folder names are the same),
as in ``scenesA/x_r0_c0``; they are stable as long as the folders keep their names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from sarkit.errors import InputError

#: The manifest key under which a combined row keeps the folder its paths are relative to.
ROOT_KEY = "_root"
#: tiling.json entries that must be the same in every set, and how messages name them.
SAME_IN_EVERY_SET = (("params.size", "tile size"), ("sar_bands", "SAR bands"), ("optical_bands", "optical bands"),
                     ("classes", "classes"), ("normalization.sar", "SAR normalisation"),
                     ("normalization.optical", "optical normalisation"))


def data_dirs(data: Any) -> tuple[Path, ...]:
    """The tile folders of ``data`` (a path or a sequence of paths); ``InputError`` for none, or one given twice."""
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data or ())
    paths = tuple(Path(p) for p in items)
    if not paths:
        raise InputError("--data: give a tile directory written by sarkit tile")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise InputError(f"--data {p} is given twice (as {seen[key]}); give each tile set once")
        seen[key] = p
    return paths


def set_names(roots: Sequence[Path]) -> list[str]:
    """The prefix of each set's tile ids: its folder name, or (when two share a name) its path below the common
    parent of all the folders."""
    names = [Path(r).resolve().name for r in roots]
    if len(set(names)) == len(names):
        return names
    full = [Path(r).resolve() for r in roots]
    common = Path(os.path.commonpath([str(f) for f in full]))
    return [f.relative_to(common).as_posix() for f in full]


def _entry(record: dict[str, Any], key: str) -> Any:
    """A dotted entry of a tiling.json record; for normalisations without their DN offset (allowed to differ)."""
    value: Any = record
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if key.startswith("normalization.") and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "offset"}
    return value


def _show(value: Any) -> str:
    """An entry's value for a message: lists as comma lists, normalisations by their ranges."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict) and "lo" in value:
        return f"{value.get('modality')} {value.get('bands')} lo={value.get('lo')} hi={value.get('hi')}"
    return "none" if value is None else str(value)


def check_compatible(records: Sequence[dict[str, Any]], roots: Sequence[Path]) -> None:
    """``InputError`` naming the first set that differs from the first one (tile size, bands, classes, ranges)."""
    first, base = records[0], roots[0]
    for record, root in zip(records[1:], roots[1:]):
        for key, what in SAME_IN_EVERY_SET:
            a, b = _entry(first, key), _entry(record, key)
            if a != b:
                raise InputError(f"--data {base} and --data {root} differ in {what} ({_show(a)} against {_show(b)});"
                                 f" train on tile sets made with the same sarkit tile options, or one at a time")


def combined_rows(roots: Sequence[Path], rows_per_set: Sequence[list[dict[str, str]]]) -> list[dict[str, str]]:
    """The manifest rows of every set, in the given order, each with its folder (``ROOT_KEY``) and, with more
    than one set, its tile id prefixed by the set's name (``set_names``)."""
    if len(roots) == 1:
        return list(rows_per_set[0])
    out = []
    for name, root, rows in zip(set_names(roots), roots, rows_per_set):
        for r in rows:
            out.append({**r, "tile_id": f"{name}/{r['tile_id']}", ROOT_KEY: str(root)})
    return out


def row_root(row: dict[str, str], default: Path) -> Path:
    """The folder a manifest row's paths are relative to (its set's; ``default`` for a row of one set)."""
    return Path(row[ROOT_KEY]) if row.get(ROOT_KEY) else Path(default)
