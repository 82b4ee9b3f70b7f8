"""The refined twin in labctl's artifacts: train on it, record it in model.json, predict with it.

A model trained with ``labctl train --twin FILE`` carries the twin file's content
under the top-level ``twin`` key of its model.json, so the artifact alone still
re-simulates what the model was trained for; deploy's twin predictions apply it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from labctl.errors import ConfigError
from sims.errors import DataError
from sims.io import write_json_atomic


def twin_init(path: Path, geometry: Any) -> Callable[[Any], None]:
    """An ``init`` hook for ``sims.train.train`` that makes the model simulate the refined twin."""
    from sims.refine import apply_twin, check_geometry, load_twin

    try:
        corrections, stored = load_twin(path)
        check_geometry(stored, geometry, str(path))
        corrections.check(geometry)
    except DataError as e:
        raise ConfigError(str(e)) from None
    return lambda model: apply_twin(model, corrections) and None


def record_twin(folder: Path, twin_path: Path) -> None:
    """Add the twin file's content to ``folder/model.json`` (key ``twin``), atomically."""
    meta_path = folder / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    twin = json.loads(Path(twin_path).read_text(encoding="utf-8"))
    twin["file"] = str(Path(twin_path).resolve())
    meta["twin"] = twin
    write_json_atomic(meta_path, meta)


def model_twin(meta: dict[str, Any]) -> Any:
    """The corrections recorded in a model's model.json, or None for a plain-twin model."""
    from sims.refine import TwinCorrections

    data = meta.get("twin")
    if not data:
        return None
    return TwinCorrections.from_json(data, "model.json twin")
