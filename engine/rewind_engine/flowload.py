"""Load a flow from `path/to/file.py` or `module:attribute` (as `rewind run` takes it).

The file or module must define `flow`: a Dataflow, or a function that takes the extra
command-line arguments (a list of str) and returns one. For `module:attribute` the
attribute is used instead of `flow`. The file's folder is put first on sys.path so a
flow can import its neighbours.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .dataflow import Dataflow


class FlowLoadError(RuntimeError):
    """The flow could not be found or built; the message says where and why."""


def load_flow(spec: str, args: list[str] | None = None) -> Dataflow:
    args = list(args or [])
    target: Any
    path_text, attr = spec, "flow"
    if ":" in spec and not spec.endswith(".py"):
        head, _, tail = spec.rpartition(":")
        path_text, attr = head, tail or "flow"
    if path_text.endswith(".py"):
        path = Path(path_text).resolve()
        if not path.is_file():
            raise FlowLoadError(f"flow file {path_text} not found (cwd: {Path.cwd()})")
        sys.path.insert(0, str(path.parent))
        name = f"rewind_flow_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise FlowLoadError(f"cannot load {path} as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(path_text)
        except ImportError as exc:
            raise FlowLoadError(f"cannot import flow module {path_text!r}: {exc}") from exc
    target = getattr(module, attr, None)
    if target is None:
        raise FlowLoadError(f"{spec}: no attribute {attr!r} (define `{attr} = Dataflow(...)`)")
    if not isinstance(target, Dataflow) and callable(target):
        target = target(args)
    elif args:
        raise FlowLoadError(
            f"{spec}: extra arguments {args} given, but `{attr}` is a Dataflow, not a function"
        )
    if not isinstance(target, Dataflow):
        raise FlowLoadError(f"{spec}: `{attr}` is {type(target).__name__}, not a Dataflow")
    return target
