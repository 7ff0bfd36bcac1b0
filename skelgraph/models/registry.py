"""The model registry: ``create("infogcn2", num_classes=14, layout="coco17")``.

A model adds itself with :func:`register_model` when its module is imported. This module imports
no model, so that a model module can import it without a cycle; :mod:`skelgraph.models` imports
the built-in models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from skelgraph.layouts import Layout
from skelgraph.models.base import SkeletonModel

__all__ = [
    "CREATE_ARGS",
    "available_models",
    "create",
    "model_class",
    "register_model",
    "registered_name",
]

#: The arguments of :func:`create` that every model takes: what the members of an ensemble share
#: and what a checkpoint's meta stores in fields of its own.
CREATE_ARGS = ("num_classes", "layout", "in_channels")

_REGISTRY: dict[str, type[SkeletonModel]] = {}

M = TypeVar("M", bound=type[SkeletonModel])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator adding a :class:`SkeletonModel` subclass to the registry as ``name``.

    Raises:
        ValueError: when ``name`` is taken by another class.
    """

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, SkeletonModel)):
            raise TypeError(
                f"register_model({name!r}): expected a SkeletonModel subclass, got {cls}"
            )
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"register_model: name {name!r} is already taken by {existing.__qualname__}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def registered_name(model: SkeletonModel) -> str:
    """The registry name of ``model``'s class (or of a registered base class).

    Raises:
        ValueError: when no registered class matches.
    """
    for name, cls in _REGISTRY.items():
        if type(model) is cls:
            return name
    for name, cls in _REGISTRY.items():
        if isinstance(model, cls):
            return name
    raise ValueError(
        f"model: expected an instance of a registered model {available_models()}, "
        f"got {type(model).__qualname__}"
    )


def available_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def model_class(name: str) -> type[SkeletonModel]:
    """The class registered as ``name``.

    Raises:
        ValueError: naming the registered models when ``name`` is none of them.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"model: expected one of {available_models()}, got {name!r}") from None


def create(
    name: str,
    *,
    num_classes: int,
    layout: str | Layout | Mapping[str, Any] = "coco17",
    in_channels: int = 3,
    **kwargs: Any,
) -> SkeletonModel:
    """Builds the registered model ``name``.

    Args:
        name: One of :func:`available_models`.
        num_classes: Number of classes ``K``.
        layout: Joint layout: a registered name, a :class:`Layout` or its ``to_dict()``.
        in_channels: Channels ``C`` per joint (coordinates, then the confidence).
        **kwargs: Model-specific options (see each model's class).
    """
    cls = model_class(name)
    return cls(num_classes=num_classes, layout=layout, in_channels=in_channels, **kwargs)
