"""Many scenes for one tile set: S1 scenes given as a list or glob, their optical and label partners found by a
name pattern, or all given in a CSV file.

* ``expand_scenes``: each item a path, a glob (``scenes/*_s1.tif``: sorted matches) or a comma list of the files of
  one raster (``VV.tif,VH.tif``).
* ``partner``: a partner's path from a pattern with the fields ``{dir}`` (the S1 file's folder), ``{name}`` (its
  file name), ``{stem}`` (its name without extension) and ``{stem/OLD/NEW}`` (the stem with OLD replaced by NEW),
  e.g. ``{dir}/{stem/_s1/_s2}.tif`` pairs ``a/x_s1.tif`` with ``a/x_s2.tif``.
* ``scenes_from_csv``: one scene per row, columns ``s1,optical,labels`` (a header row with those names is optional;
  ``optical`` and ``labels`` may be empty; a cell may be a comma list, quoted, for a raster of several files);
  relative paths are relative to the CSV file's folder.
"""

from __future__ import annotations

import csv
import glob
import re
from pathlib import Path
from typing import Any, Sequence

from sarkit.data.layouts import Scene
from sarkit.errors import InputError
from sarkit.raster.stack import scene_files

#: The columns of a scenes CSV file, in order.
SCENE_COLUMNS = ("s1", "optical", "labels")
_FIELD = re.compile(r"\{([a-z]+)(?:/([^/{}]*)/([^/{}]*))?\}")
_GLOB = re.compile(r"[*?\[]")


def expand_scenes(items: Sequence[Any]) -> list[Any]:
    """The S1 scenes of ``items``: globs expanded (sorted; ``InputError`` when one matches nothing), comma lists
    kept as one multi-file scene, plain paths as they are."""
    out: list[Any] = []
    for item in items:
        text = str(item)
        if _GLOB.search(text) and not Path(text).exists():
            hits = sorted(glob.glob(text, recursive=True))
            if not hits:
                raise InputError(f"no file matches {text} (check the pattern; quote it so the shell leaves it to "
                                 f"sarkit)")
            out += [Path(h) for h in hits]
        elif "," in text and not Path(text).exists():
            out.append(text)
        else:
            out.append(Path(text))
    return out


def is_pattern(text: Any) -> bool:
    """True when ``text`` is a partner pattern (holds a ``{…}`` field)."""
    return text is not None and _FIELD.search(str(text)) is not None


def partner(pattern: str, s1: Path, option: str = "--optical") -> Path:
    """The partner file of S1 file ``s1`` named by ``pattern`` (see the module docstring)."""
    s1 = Path(s1)

    def field(m: re.Match) -> str:
        key, old, new = m.group(1), m.group(2), m.group(3)
        values = {"dir": str(s1.parent), "name": s1.name, "stem": s1.stem}
        if key not in values or (old is not None and key != "stem"):
            raise InputError(f"{option} {pattern}: unknown field {{{m.group(0)[1:-1]}}}; use {{dir}}, {{name}}, "
                             f"{{stem}} or {{stem/OLD/NEW}}")
        if old is not None:
            if old not in s1.stem:
                raise InputError(f"{option} {pattern}: {s1.name} does not contain {old!r} to replace")
            return s1.stem.replace(old, new)
        return values[key]

    return Path(_FIELD.sub(field, pattern))


def scenes_from_pattern(s1s: Sequence[Any], optical: str | None, labels: str | None) -> list[Scene]:
    """One scene per S1 item (``expand_scenes``), partners from the patterns ``optical`` and ``labels`` (None:
    none). A partner that does not exist is left to the tiling, which reports that scene and goes on."""
    from sarkit.data.tiling import scene_record

    scenes = []
    for item in expand_scenes(s1s):
        first = scene_files(item)[0]
        scenes.append(scene_record(item, partner(optical, first, "--optical") if optical else None,
                                   partner(labels, first, "--labels") if labels else None))
    return scenes


def scenes_from_csv(path: Path) -> list[Scene]:
    """Scenes listed in a CSV file (see the module docstring); ``InputError`` naming the row that is wrong."""
    from sarkit.data.tiling import scene_record

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--scenes {path}: file not found (give a CSV with columns s1,optical,labels)")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0]][:1] == ["s1"]:
        rows = rows[1:]
    base = path.parent
    scenes = []
    for n, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row] + ["", ""]
        if not cells[0] or len([c for c in row]) > len(SCENE_COLUMNS):
            raise InputError(f"--scenes {path}: row {n} ({','.join(row)}) is not s1,optical,labels (quote a comma "
                             f"list of several files: \"VV.tif,VH.tif\")")
        s1, opt, lab = (_rooted(c, base) for c in cells[:3])
        scenes.append(scene_record(s1, opt or None, lab or None))
    if not scenes:
        raise InputError(f"--scenes {path} lists no scene (one row per scene: s1,optical,labels)")
    return scenes


def _rooted(cell: str, base: Path) -> str:
    """A CSV cell's files (a comma list) with relative paths made relative to ``base``."""
    if not cell:
        return ""
    return ",".join(str(p if p.is_absolute() else base / p) for p in scene_files(cell))
