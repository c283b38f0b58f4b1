"""CPU-side augmentation (albumentations 2.x), built from the config and run inside the Dataset.

Conventions: image uint8 (H, W) grayscale, mask uint8 (H, W, C) multi-label (C = number of classes).
Albumentations' own defaults apply; note that in albumentations 2 the geometric ops (Rotate, Affine, ...)
default to ``border_mode=cv2.BORDER_CONSTANT`` with fill 0 (albumentations 1.x reflected the border).
"""

from __future__ import annotations

import difflib
import inspect
import random
import re
import warnings
from typing import Any

import albumentations as A
import numpy as np
import torch
from albumentations.core.transforms_interface import BasicTransform

from transforms.sobel import Sobel
from utils.errors import ConfigError

# Interfaces, not transforms; and ops that break the Dataset's (H, W) / (H, W, C) numpy contract.
_EXCLUDED = {
    "BasicTransform": "an abstract base class",
    "DualTransform": "an abstract base class",
    "ImageOnlyTransform": "an abstract base class",
    "Transform3D": "an abstract base class",
    "ToTensorV2": "not allowed: the Dataset converts to tensors itself",
    "ToTensor3D": "not allowed: the Dataset converts to tensors itself",
}


def _build_registry() -> dict[str, type[BasicTransform]]:
    registry: dict[str, type[BasicTransform]] = {}
    for name in dir(A):
        obj = getattr(A, name)
        if (
            inspect.isclass(obj)
            and issubclass(obj, BasicTransform)
            and name not in _EXCLUDED
            and not name.endswith("3D")  # volumetric ops need (D, H, W) input
        ):
            registry[name] = obj
    registry["Sobel"] = Sobel  # not in albumentations, see transforms/sobel.py
    return registry


CPU_TRANSFORMS: dict[str, type[BasicTransform]] = _build_registry()


def closest_name_hint(name: str, valid: list[str]) -> str:
    """' (did you mean 'X'?)' for the closest valid name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if not match:  # case-only typos ("clahe") score low with difflib; retry case-insensitively
        lowered = {v.lower(): v for v in valid}
        match = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)]
    return f" (did you mean '{match[0]}'?)" if match else ""


def one_line_error(exc: BaseException) -> str:
    """Flatten an exception message (albumentations wraps multi-line pydantic errors) into one line."""
    cause = exc if hasattr(exc, "errors") else exc.__cause__
    errors = getattr(cause, "errors", None)
    if callable(errors):  # pydantic ValidationError: "field: message" per error
        try:
            parts = []
            for err in errors():
                loc = str(err.get("loc", ("",))[0]) if err.get("loc") else ""
                msg = str(err.get("msg", "")).strip()
                shown = loc and "input" in err and not isinstance(err["input"], dict)
                got = f" (got {err['input']!r})" if shown else ""
                parts.append(f"{loc}: {msg}{got}" if loc else msg)
            if parts:
                return "; ".join(dict.fromkeys(parts))  # de-duplicated, order kept
        except Exception:
            pass
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("For further information")]
    return re.sub(r"\s+", " ", "; ".join(lines)) or type(exc).__name__


def split_spec(spec: Any, where: str, valid_names: list[str]) -> tuple[str, dict[str, Any]]:
    """Check one config entry {'name': ..., **params}; return (name, params). Shared with the GPU builder."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {type(spec).__name__}")
    if "name" not in spec:
        raise ConfigError(f"{where}: missing 'name'")
    name = spec["name"]
    if not isinstance(name, str) or name not in valid_names:
        hint = closest_name_hint(str(name), valid_names)
        if not hint and len(valid_names) <= 12:  # short lists (the GPU side): just say what is available
            hint = f" (available: {', '.join(valid_names)})"
        raise ConfigError(f"{where}: unknown transform {name!r}{hint}")
    params = {k: v for k, v in spec.items() if k != "name"}
    return name, params


def _construct(cls: type[BasicTransform], params: dict[str, Any], where: str) -> BasicTransform:
    name = cls.__name__
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = cls(**params)
    except (TypeError, ValueError) as exc:  # albumentations re-raises pydantic's ValidationError as ValueError
        raise ConfigError(f"{where}: invalid parameters for {name}: {one_line_error(exc)}") from exc
    # albumentations 2 only *warns* about unknown arguments (and ignores them); make them config errors
    unknown = list(getattr(transform, "invalid_args", []) or [])
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(map(repr, unknown))} for {name}")
    for w in caught:  # re-emit the other warnings (e.g. deprecations) untouched
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return transform


def check_spec_list(specs: Any, key: str) -> bool:
    """True for a non-empty list of transform entries, False for None or []; anything else is a ConfigError."""
    if specs is not None and not isinstance(specs, (list, tuple)):
        raise ConfigError(f"{key}: expected a list of transforms, got {type(specs).__name__}")
    return bool(specs)


def build_cpu_transforms(specs: list[dict] | None, key: str) -> A.Compose | None:
    """Build an albumentations Compose from config entries like {'name': 'Rotate', 'limit': 10, 'p': 0.5}.

    ``key`` is the config path used in error messages (e.g. 'transforms.train'). Empty list -> None.
    """
    if not check_spec_list(specs, key):
        return None
    valid = sorted(CPU_TRANSFORMS)
    transforms = []
    for i, spec in enumerate(specs):
        where = f"{key}[{i}]"
        if isinstance(spec, dict) and spec.get("name") in _EXCLUDED:
            raise ConfigError(f"{where}: transform {spec['name']!r} is {_EXCLUDED[spec['name']]}")
        name, params = split_spec(spec, where, valid)
        transforms.append(_construct(CPU_TRANSFORMS[name], params, where))
    return A.Compose(transforms)


def apply_cpu_transforms(
    compose: A.Compose | None, image: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the Compose on image (H, W) and mask (H, W, C) (or None: image only); return the same layout.

    Some albumentations ops hand grayscale images back as (H, W, 1); squeeze that so the Dataset always
    gets (H, W). A (H, W, 1) mask (one class) likewise comes back as (H, W, 1).
    """
    if compose is None:
        return image, mask
    # albumentations 2 draws from its own generator, seeded from the OS unless told: seed it from torch's, which
    # seed_everything and the DataLoader workers seed per epoch and worker, so that a run is reproducible
    seed = int(torch.randint(0, 2**63 - 1, ()))
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = compose(image=image) if mask is None else compose(image=image, mask=mask)
    image_out, mask_out = out["image"], out.get("mask")
    if image_out.ndim == 3 and image_out.shape[-1] == 1:
        image_out = image_out[..., 0]
    if mask is not None and mask.ndim == 3 and mask_out.ndim == 2:
        mask_out = mask_out[..., None]
    return image_out, mask_out
