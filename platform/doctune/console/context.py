"""What a console page builder gets (:class:`Console`) and how its handlers report errors (:func:`action`).

A page is a module with ``build(console: Console) -> None``, called inside its ``gr.Tab``. It wires
its own events, wraps every handler in :func:`action` (API errors become a message, never a trace),
asks :meth:`Console.client` for the signed-in tenant's API client, registers what must refresh on
sign-in with :meth:`Console.on_sign_in`, and marks the controls that change something with
:meth:`Console.writes` (a viewer never sees them)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr
import httpx

from doctune.client import DoctuneClient
from doctune.console.session import Sessions, SignedIn
from doctune.errors import DoctuneError

__all__ = ["Console", "action", "describe_error", "element_id"]


def describe_error(e: DoctuneError) -> str:
    """The API's message, then each bad field with what to do about it, each once: a message that
    already lists the fields (``"2 invalid field(s): a: ...; b: ..."``) is cut to its head."""
    items = [f"{err.get('field', '(root)')}: {err.get('message', '')}" for err in e.errors]
    head = e.message
    if items and any(item in head for item in items):
        head = head.split(":", 1)[0] if "invalid field" in head else head
        for item in items:
            head = head.replace(item, "").strip(" ;")
    lines = [head or f"{len(items)} invalid field(s)"]
    lines += [f"• {item}" for item in items]
    if e.field and not e.errors:
        lines.append(f"(field: {e.field})")
    return "\n".join(lines)


def action(fn: Callable) -> Callable:
    """Wrap a console handler: an API error is shown as its message, a lost API as a plain sentence."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DoctuneError as e:
            raise gr.Error(describe_error(e), title="Not done") from None
        except httpx.TransportError:
            raise gr.Error("The doctune API did not answer; check `doctune status` and try again.",
                           title="API unreachable") from None
    return wrapped


@dataclass
class Console:
    """What every page builder gets: the signed-in session of a request, and registries the app wires."""

    sessions: Sessions
    sign_in_hooks: list[tuple[Callable, list[Any]]] = field(default_factory=list)
    write_controls: list[Any] = field(default_factory=list)
    admin_controls: list[Any] = field(default_factory=list)
    elements: dict[str, Any] = field(default_factory=dict)
    languages: dict[str, str] = field(default_factory=dict)  # session hash -> its language switch's value

    def add(self, name: str, component: Any) -> Any:
        """Register ``component`` as ``"<tab>.<name>"`` (its UI text then follows the language switch,
        see :mod:`doctune.console.locales`); returns it. Without an ``elem_id`` of its own it gets
        ``"<tab>-<name>"`` (``#datasets-upload``), and whatever its id, its name is one of its CSS
        classes, so a browser test finds it by name: ``[class~="datasets.upload"]``."""
        if name in self.elements:
            raise ValueError(f"console element {name!r} is registered twice")
        self.elements[name] = component
        if getattr(component, "elem_id", None) is None:
            component.elem_id = element_id(name)
        _add_class((component,), name)
        return component

    def user(self, request: gr.Request) -> SignedIn:
        return self.sessions.get(getattr(request, "session_hash", None))

    def client(self, request: gr.Request) -> DoctuneClient:
        return self.user(request).client

    def on_sign_in(self, fn: Callable, outputs: list[Any]) -> None:
        """Run ``fn(request)`` (wrapped in :func:`action`) after a successful sign-in; it returns ``outputs``."""
        self.sign_in_hooks.append((fn, outputs))

    def writes(self, *components: Any) -> None:
        """Controls that create, change or delete: hidden from viewers. Each gets the CSS class
        ``write``, by which the browser test checks that a viewer sees none."""
        self.write_controls.extend(components)
        _add_class(components, "write")

    def admin_only(self, *components: Any) -> None:
        """Controls (or a whole tab) only a platform admin sees; each gets the CSS class ``admin``."""
        self.admin_controls.extend(components)
        _add_class(components, "admin")


def element_id(name: str) -> str:
    """The HTML id of the element registered as ``"<tab>.<name>"``: ``"<tab>-<name>"``."""
    return name.replace(".", "-")


def _add_class(components: tuple[Any, ...], css_class: str) -> None:
    for c in components:
        if hasattr(c, "elem_classes"):
            classes = c.elem_classes or []
            c.elem_classes = [*classes, css_class] if css_class not in classes else classes
