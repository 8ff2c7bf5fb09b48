"""The console names its elements the way the browser tests find them: a component registered as
``"<tab>.<name>"`` carries that name as a CSS class and gets the HTML id ``"<tab>-<name>"`` unless it
has one; write controls carry the CSS class ``write`` and admin-only ones ``admin``
(tests/e2e/console.py relies on all of these)."""

from __future__ import annotations

import gradio as gr

from doctune.console.context import Console
from doctune.console.session import Sessions


def test_registered_elements_get_ids_and_role_classes():
    console = Console(sessions=Sessions("http://127.0.0.1:9"))
    with gr.Blocks():
        upload = console.add("datasets.upload", gr.Button("Upload", elem_classes="big"))
        key = console.add("top.api_key", gr.Textbox(elem_id="api-key"))
        delete = console.add("datasets.delete", gr.Button("Delete"))
        console.writes(upload, delete)
        console.writes(delete)
        console.admin_only(key)
    assert (upload.elem_id, key.elem_id, delete.elem_id) == ("datasets-upload", "api-key", "datasets-delete")
    assert upload.elem_classes == ["big", "datasets.upload", "write"]
    assert delete.elem_classes == ["datasets.delete", "write"] and key.elem_classes == ["top.api_key", "admin"]
    assert console.elements["datasets.upload"] is upload
