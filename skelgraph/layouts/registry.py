"""The layout registry: layouts by name, filled with the built-in layouts on import."""

from __future__ import annotations

from skelgraph.layouts.layout import Layout

__all__ = ["get_layout", "list_layouts", "register_layout"]

_REGISTRY: dict[str, Layout] = {}


def register_layout(layout: Layout, *, overwrite: bool = False) -> Layout:
    """Adds :obj:`layout` to the registry under ``layout.name`` and returns it.

    Registering an identical layout again is a no-op; a different layout under a taken name raises
    :class:`ValueError` unless :obj:`overwrite` is set.
    """
    if not isinstance(layout, Layout):
        raise TypeError(f"register_layout: expected a Layout, got {type(layout).__name__}")
    existing = _REGISTRY.get(layout.name)
    if existing is not None and existing != layout and not overwrite:
        raise ValueError(
            f"register_layout: layout {layout.name!r} is already registered with different "
            "joints or structure; pass overwrite=True to replace it"
        )
    _REGISTRY[layout.name] = layout
    return layout


def get_layout(name_or_layout: str | Layout) -> Layout:
    """The registered layout called :obj:`name_or_layout`; a :class:`Layout` is returned as is."""
    if isinstance(name_or_layout, Layout):
        return name_or_layout
    if not isinstance(name_or_layout, str):
        raise TypeError(
            f"layout: expected a layout name or Layout, got {type(name_or_layout).__name__}"
        )
    try:
        return _REGISTRY[name_or_layout]
    except KeyError:
        raise ValueError(
            f"layout: expected one of {list_layouts()}, got {name_or_layout!r}"
        ) from None


def list_layouts() -> list[str]:
    """The names of all registered layouts, sorted."""
    return sorted(_REGISTRY)
