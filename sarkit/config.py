"""``--config FILE``: TOML holding default options for any command; the command line wins.

Layout: one table per command, keys are option names with dashes or underscores::

    [tile]
    size = 256
    max-nodata = 0.05

    [translate]
    overlap = 64
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from sarkit.errors import InputError


def load_config(path: str | Path, commands: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Read a TOML config into ``{command: {param_name: value}}``, checking command and option names.

    ``commands`` maps each command name to ``{key: parameter name}``, the keys being the option names a config
    may use: the command-line option without its dashes (``format`` for ``--format``) and the parameter name.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"config file {p} is not valid TOML: {exc}") from None
    out: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if section not in commands:
            raise InputError(f"config file {p}: unknown command [{section}]; commands: {', '.join(sorted(commands))}")
        if not isinstance(values, dict):
            raise InputError(f"config file {p}: [{section}] must be a table of options")
        params: dict[str, Any] = {}
        for key, value in values.items():
            known = commands[section]
            name = known.get(key) or known.get(key.replace("-", "_")) or known.get(key.replace("_", "-"))
            if name is None:
                raise InputError(f"config file {p}: [{section}] has no option {key!r}")
            params[name] = value
        out[section] = params
    return out
