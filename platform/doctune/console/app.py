"""The console's Blocks app: a sign-in bar, then one tab per page (:mod:`doctune.console.pages`;
the page interface is in :mod:`doctune.console.context`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from doctune.console import locales
from doctune.console.context import Console, action
from doctune.console.pages import admin, datasets, jobs, models, new_job, playground, sweeps
from doctune.console.session import Sessions

__all__ = ["build_console", "queued"]

# Gradio's queue polls for work every millisecond, and for progress updates every 10 ms, while it
# has none (gradio/queueing.py, sleep_when_free and progress_update_sleep_when_free): an idle console
# then used 5-8 % of a core, all day. Every 20 ms is still unnoticeable to a person clicking.
IDLE_POLL_S = 0.02

# (tab title, page module, admin only), in tab order
PAGES = [("Datasets", datasets, False), ("New job", new_job, False), ("Jobs", jobs, False),
         ("Sweeps", sweeps, False), ("Models & deployments", models, False),
         ("Playground", playground, False), ("Admin", admin, True)]


def build_console(api_url: str) -> gr.Blocks:
    console = Console(sessions=Sessions(api_url))
    with gr.Blocks(title="doctune console", analytics_enabled=False) as blocks:
        with gr.Row(equal_height=True):
            gr.Markdown("## doctune")
            key = console.add("top.api_key", gr.Textbox(label="API key", type="password", placeholder="dtk_...",
                                                        scale=3, elem_id="api-key"))
            sign_in = console.add("top.sign_in", gr.Button("Sign in", variant="primary", scale=1, elem_id="sign-in"))
            sign_out = console.add("top.sign_out", gr.Button("Sign out", scale=1, visible=False, elem_id="sign-out"))
            language = console.add("top.language", gr.Radio([(v, k) for k, v in locales.LANGUAGES.items()], value="en", label="Language",
                                                            scale=1, elem_id="language"))
        who = gr.Markdown("Sign in with an API key to start.", elem_id="who")
        with gr.Column(visible=False) as signed_in_area:
            with gr.Tabs():
                for title, page, admin_only in PAGES:
                    short = page.__name__.rsplit('.', 1)[-1]
                    with gr.Tab(title, visible=not admin_only, elem_id=f"tab-{short}") as tab:
                        page.build(console)
                    console.add(f"tabs.{short}", tab)  # its title follows the language switch
                    if admin_only:
                        console.admin_only(tab)
        _wire_sign_in(console, key, sign_in, sign_out, who, signed_in_area)
        _wire_language(console, language, who)

        def forget(request: gr.Request) -> None:  # the tab closed: drop its key
            console.sessions.sign_out(request.session_hash)

        blocks.unload(forget)
    return blocks


def queued(blocks: gr.Blocks, concurrency: int = 8) -> gr.Blocks:
    """``blocks`` with Gradio's queue on (``concurrency`` events at once), polling every ``IDLE_POLL_S``
    while idle: launch it next."""
    blocks.queue(default_concurrency_limit=concurrency)
    queue = blocks._queue
    queue.sleep_when_free = max(queue.sleep_when_free, IDLE_POLL_S)
    queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, IDLE_POLL_S)
    return blocks


def _relabel(component: Any, text: str) -> Any:
    """A button or markdown shows its text as its value; every other component as its label."""
    if isinstance(component, (gr.Button, gr.Markdown)):
        return gr.update(value=text)
    return gr.update(label=text)


def who_line(console: Console, session_hash: str | None) -> str:
    """The line under the sign-in bar, in the session's language: who is signed in, or how to start."""
    lang = console.languages.get(session_hash, "en")
    user = console.sessions.peek(session_hash)
    if user is None:
        return locales.text("top.who_none", lang) or ""
    return f"{locales.text('top.who', lang)} **{user.who}**"


def _wire_language(console: Console, language: Any, who: Any) -> None:
    named = [(name, c) for name, c in console.elements.items() if name in locales.LOCALES]

    def switch(lang: str, request: gr.Request):
        console.languages[request.session_hash] = lang
        return [who_line(console, request.session_hash), *(_relabel(c, locales.text(name, lang)) for name, c in named)]

    language.change(switch, [language], [who, *(c for _, c in named)])


def _wire_sign_in(console: Console, key: Any, sign_in: Any, sign_out: Any, who: Any, area: Any) -> None:
    roles = console.write_controls + console.admin_controls

    @action
    def do_sign_in(api_key: str, request: gr.Request):
        user = console.sessions.sign_in(request.session_hash, api_key)
        shown = [gr.update(visible=user.can_write) for _ in console.write_controls]
        shown += [gr.update(visible=user.is_admin) for _ in console.admin_controls]
        return [gr.update(value=""), who_line(console, request.session_hash), gr.update(visible=True),
                gr.update(visible=False), gr.update(visible=True), *shown]

    def do_sign_out(request: gr.Request):
        console.sessions.sign_out(request.session_hash)
        return [who_line(console, request.session_hash), gr.update(visible=False),
                gr.update(visible=True), gr.update(visible=False)]

    # a wrong key shows its message as a toast; show_progress="hidden" keeps Gradio's red "Error" badge off
    # the key field and the who line (it stayed there even after the next, right key)
    outputs = [key, who, area, sign_in, sign_out, *roles]
    clicked = sign_in.click(do_sign_in, [key], outputs, api_name="do_sign_in", show_progress="hidden")
    entered = key.submit(do_sign_in, [key], outputs, api_visibility="private", show_progress="hidden")
    for event in (clicked, entered):  # then each page fills itself for the user
        for fn, outputs in console.sign_in_hooks:
            event = event.success(action(fn), None, outputs, api_visibility="private")
    sign_out.click(do_sign_out, None, [who, area, sign_in, sign_out])
