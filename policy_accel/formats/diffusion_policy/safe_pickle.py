"""Load a Diffusion Policy ``.ckpt`` (a pickle) without ever running code the file names.

A pickle may name any importable callable (``os.system``) and call it while loading. Diffusion
Policy's checkpoints only need a handful: omegaconf's config containers, torch's tensor rebuild,
two collections and one dill helper (``dill._dill._load_type('dict')``, which we answer with the
builtin type, so dill need not be installed). :class:`AllowListUnpickler` resolves exactly those
and refuses every other global with :class:`UnsafePickleError` naming it. This module is also a
``pickle_module`` for ``torch.load``, which handles the zip container and tensor storages.
"""

from __future__ import annotations

import builtins
import collections
import io
import pickle
import typing
from pathlib import Path
from typing import Any, Callable

import torch

# builtin types ``dill._dill._load_type`` may hand back (it is only ever asked for plain containers)
_DILL_TYPES = {
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "str",
    "bytes",
    "int",
    "float",
    "bool",
    "complex",
    "NoneType",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list: refusing to load it."""


def _dill_load_type(name: str) -> type:
    if name not in _DILL_TYPES:
        raise UnsafePickleError(f"dill._dill._load_type({name!r}) is not an allowed type")
    return type(None) if name == "NoneType" else getattr(builtins, name)


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | Any]:
    """(module, name) -> object, built lazily so that omegaconf is imported only when needed.

    Exactly the globals DP's checkpoints reference (see the fixtures' README), plus omegaconf's typed
    value nodes, which a config holds when its values were typed; all are plain data containers."""
    import _codecs

    from omegaconf import base, dictconfig, listconfig, nodes

    return {
        ("_codecs", "encode"): _codecs.encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("dill._dill", "_load_type"): _dill_load_type,
        ("omegaconf.base", "ContainerMetadata"): base.ContainerMetadata,
        ("omegaconf.base", "Metadata"): base.Metadata,
        ("omegaconf.dictconfig", "DictConfig"): dictconfig.DictConfig,
        ("omegaconf.listconfig", "ListConfig"): listconfig.ListConfig,
        ("omegaconf.nodes", "AnyNode"): nodes.AnyNode,
        ("omegaconf.nodes", "StringNode"): nodes.StringNode,
        ("omegaconf.nodes", "IntegerNode"): nodes.IntegerNode,
        ("omegaconf.nodes", "FloatNode"): nodes.FloatNode,
        ("omegaconf.nodes", "BooleanNode"): nodes.BooleanNode,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("typing", "Any"): typing.Any,
    }


_ALLOWED: dict[tuple[str, str], Any] | None = None


def allowed_global_names() -> list[str]:
    return sorted(f"{m}.{n}" for m, n in _allowed())


def _allowed() -> dict[tuple[str, str], Any]:
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed_globals()
    return _ALLOWED


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` answers only from the allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle global '{module}.{name}': not one of the classes/functions a Diffusion "
                f"Policy checkpoint needs (allowed: {', '.join(allowed_global_names())})"
            ) from None


AllowListUnpickler = Unpickler


def load(file: typing.IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with the allow-list (torch's legacy, non-zip format calls this)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return Unpickler(io.BytesIO(data), **kwargs).load()


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` of a pickled checkpoint onto the CPU through the allow-list unpickler."""
    import sys

    with open(path, "rb") as handle:
        return torch.load(handle, map_location="cpu", pickle_module=sys.modules[__name__], weights_only=False)
