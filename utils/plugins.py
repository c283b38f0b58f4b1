"""The user's own code by name: "package.module:Name" (anything importable) or "path/to/file.py:Name", so that a
model or a loss can be tried without editing the framework. Every failure is one ConfigError naming the key."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from utils.errors import ConfigError


def is_plugin(name: str) -> bool:
    return ":" in name


def load_plugin(spec: str, key: str) -> Callable:
    """The callable named by `spec`; a relative file path is taken from the current directory."""
    source, _, attr = spec.rpartition(":")
    if not source or not attr:
        raise ConfigError(f"{key}: {spec!r} is not 'package.module:Name' or 'path/to/file.py:Name'")
    module = _import_file(source, key) if source.endswith(".py") else _import_module(source, key)
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}: {source} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(f"{key}: {spec} is a {type(target).__name__}, not a class or function")
    return target


def call_plugin(target: Callable, key: str, spec: str, **kwargs):
    """Call `target(**kwargs)` after checking that its signature accepts them, so that a wrong signature is
    reported as such and a TypeError raised inside the user's code is not mistaken for one."""
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{key}: {spec} cannot be called with ({', '.join(kwargs)}): {e}") from None
    except ValueError:  # no signature to inspect (some builtins): let the call decide
        pass
    return target(**kwargs)


def _import_module(name: str, key: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # an import runs the user's module: any error there is a failed import
        raise ConfigError(f"{key}: cannot import {name!r} ({type(e).__name__}: {' '.join(str(e).split())})") from None


def _import_file(path_text: str, key: str):
    path = Path(path_text).resolve()
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path_text}")
    module_name = f"_plugin_{path.stem}_{abs(hash(str(path)))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ConfigError(f"{key}: cannot import {path_text} ({type(e).__name__}: {' '.join(str(e).split())})") \
            from None
    return module
