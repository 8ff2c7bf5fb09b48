"""Drive the console in Debian's chromium: start the console process, launch the browser, and the page
objects the browser tests use.

Elements are found by the name a page registered them under (``Console.add("<tab>.<name>", ...)``):
that name is one of the element's CSS classes, whatever its HTML id. A tab built for page module
``<page>`` has the id ``tab-<page>`` and its tab button ``tab-<page>-button``; controls that change
something carry the CSS class ``write`` (``Console.writes``) and admin-only ones ``admin``. Each page
object lists the names its flow needs in one place, :attr:`Page.NEEDS`; a page that shows none of
its elements yet is still a placeholder, and its flow is skipped with that reason (never passed)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
REPO = Path(__file__).resolve().parents[2]
PAGES = ["datasets", "new_job", "jobs", "sweeps", "models", "playground", "admin"]  # the console's tab order
# UTF-8 read as Latin-1 or cp1252: a lead byte's letter (Â..ô) then a continuation byte's sign; or U+FFFD
MOJIBAKE = re.compile("\ufffd|[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
                      "\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]")


def by_name(name: str) -> str:
    """The CSS selector of the element registered as ``name`` (``"datasets.upload"``)."""
    return f'[class~="{name}"]'


def mojibake(text: str) -> list[str]:
    """The stretches of ``text`` that look like mangled UTF-8 (with a little context each)."""
    return [text[max(0, m.start() - 8):m.end() + 8] for m in MOJIBAKE.finditer(text)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def console_client(url: str):
    """A gradio_client of the console at ``url``, patient as a user is: its HTTP calls wait up to
    120 s (gradio_client's 5 s default timed out on a CI machine loaded by the integration session)."""
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": 120})

@contextmanager
def running_console(api_url: str, log: Path, deadline_s: float = 180) -> Iterator[str]:
    """Start ``python -m doctune.console`` against ``api_url`` on a free port, wait until it answers,
    yield its URL, and stop it at the end. Its output goes to ``log``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "platform"), str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "doctune.console", "--api-url", api_url, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        _wait_until_answering(url, proc, log, deadline_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stack_console_url(settings) -> str | None:
    """The console that the stack (``doctune up``) started beside its API, when it starts one and it
    answers; None otherwise (then the tests start their own with :func:`running_console`)."""
    url = getattr(settings, "console_url", "")
    if not url:
        try:
            from doctune.local import console_url  # `doctune up` starts the console beside the API
        except ImportError:
            return None
        url = console_url(settings)
    try:
        return url if httpx.get(url, timeout=5).status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _wait_until_answering(url: str, proc: subprocess.Popen, log: Path, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the console exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the console did not answer at {url} within {deadline_s}s:\n"
                         f"{log.read_text(errors='replace')[-3000:]}")


def launch_chromium(playwright):
    """Debian's chromium, headless. Nothing here downloads a browser build: ``make test`` installs the
    ``chromium`` and ``fonts-noto-cjk`` packages when they are missing."""
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium "
                             "fonts-noto-cjk), or set CHROMIUM to another chromium binary")
    from playwright.sync_api import expect

    # a patient user: a Gradio event on a CI machine busy training took over playwright's 5 s default
    expect.set_options(timeout=30_000)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)


class ConsolePage:
    """One signed-in (or not yet) browser tab of the console; one per role, reused by every test."""

    def __init__(self, page, url: str, role: str, log: Path | None = None) -> None:
        self.page, self.url, self.role, self.log = page, url, role, log

    # -- the top bar ---------------------------------------------------------------------------
    def open(self) -> "ConsolePage":
        self.page.goto(self.url)
        self.page.locator("#api-key").wait_for()
        return self

    def sign_in(self, api_key: str) -> None:
        self.page.locator("#api-key").get_by_role("textbox").fill(api_key)
        self.page.locator("#sign-in").click()

    def sign_out(self) -> None:
        self.page.locator("#sign-out").click()
        self.expect("#sign-in").to_be_visible()

    def who(self) -> str:
        return self.page.locator("#who").inner_text()

    def set_language(self, label: str) -> None:
        """Pick a language by the label the switch shows (``English``, ``中文``)."""
        self.page.locator("#language").get_by_text(label, exact=True).click()

    def error_toast(self, timeout_ms: float = 30_000) -> str:
        """The text of the error toast the console shows, once it shows."""
        toast = self.page.locator(".toast-body.error")
        toast.first.wait_for(timeout=timeout_ms)
        return toast.first.inner_text()

    def wait_for_text(self, locator, text: str, timeout_s: float = 60) -> None:
        """Wait until ``locator`` shows ``text``; fail at once, with its message, when the console shows
        an error toast instead (a toast goes after a few seconds, so it is read as it shows)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            errors = self.page.locator(".toast-body.error")
            if errors.count():
                raise AssertionError(f"waiting for {text!r}, the console said: {errors.first.inner_text()!r}")
            if text in locator.inner_text():
                return
            time.sleep(0.25)
        raise AssertionError(f"{text!r} did not show within {timeout_s}s; it shows {locator.inner_text()[:300]!r}")

    def close_toasts(self) -> None:
        """Dismiss the toasts shown (one may be leaving already), so that a later one is a new one."""
        from playwright.sync_api import Error as PlaywrightError

        for close in self.page.locator(".toast-close").all():
            try:
                close.click(timeout=2_000)
            except PlaywrightError:
                pass
        self.expect(".toast-body").to_have_count(0, timeout=15_000)

    # -- tabs and elements ---------------------------------------------------------------------
    def tabs(self) -> list[str]:
        """The pages whose tab this user sees, in order."""
        return [p for p in PAGES if self.page.locator(f"#tab-{p}-button").is_visible()]

    def open_tab(self, page_name: str):
        self.page.locator(f"#tab-{page_name}-button").click()
        panel = self.page.locator(f"#tab-{page_name}")
        panel.wait_for()
        return panel

    def el(self, name: str):
        """The element registered as ``name`` (``"<tab>.<name>"``)."""
        return self.page.locator(by_name(name)).first

    def has(self, name: str) -> bool:
        return self.el(name).count() > 0

    def expect(self, selector_or_locator):
        from playwright.sync_api import expect

        loc = self.page.locator(selector_or_locator) if isinstance(selector_or_locator, str) else selector_or_locator
        return expect(loc)

    def visible_writes(self) -> list[str]:
        """The ids (or texts) of the write controls visible on the open tab."""
        return [w.get_attribute("id") or w.inner_text()[:40] for w in self.page.locator(".write").all() if w.is_visible()]

    @contextmanager
    def failing_with_a_screenshot(self, name: str) -> Iterator[None]:
        """On a failure inside, screenshot the page as ``failed-<name>`` and add the error toasts it
        shows to the failure's report."""
        try:
            yield
        except BaseException as e:
            try:  # the evidence must not replace the failure: a screenshot of a hung page times out too
                path = self.screenshot(f"failed-{name}")
                toasts = [t.inner_text(timeout=5_000) for t in self.page.locator(".toast-body").all()]
                e.add_note(f"screenshot: {path}; toasts shown: {toasts or 'none'}")
            except Exception as shot_error:
                e.add_note(f"no screenshot: {shot_error}".splitlines()[0])
            if self.log and self.log.is_file():
                e.add_note(f"the console's log ends with:\n{self.log.read_text(errors='replace')[-3000:]}")
            raise

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True, timeout=60_000)
        return path

    def cjk_glyphs_render(self, selector: str) -> bool:
        """Whether the CJK characters shown in ``selector`` have glyphs in the font the page gives
        them: two different characters draw differently, and unlike a code point no font has (a
        missing font draws each as the same empty box, "tofu")."""
        el = self.page.locator(selector).first
        a, b = [c for c in dict.fromkeys(el.inner_text()) if "\u4e00" <= c <= "\u9fff"][:2]
        return el.evaluate("""(el, [a, b]) => {
            const family = getComputedStyle(el).fontFamily;
            const draw = (ch) => { const c = document.createElement('canvas'); c.width = c.height = 48;
                const g = c.getContext('2d'); g.font = `40px ${family}`; g.fillText(ch, 4, 40); return c.toDataURL(); };
            const tofu = draw('\\u{10FFFD}');
            return draw(a) !== draw(b) && draw(a) !== tofu && draw(b) !== tofu;
        }""", [a, b])


class Page:
    """A console page's flow. ``NEEDS`` names the elements the flow uses (as the page registered them,
    without the ``"<tab>."``); :meth:`ready` opens the tab, skips while the page is a placeholder (it
    shows no registered element), and fails when the page is built but lacks an element the flow
    needs, so that a renamed element is noticed, not skipped."""

    TAB = ""
    NEEDS: tuple[str, ...] = ()

    def __init__(self, console: ConsolePage) -> None:
        self.c = console

    def ready(self) -> "Page":
        panel = self.c.open_tab(self.TAB)
        if not panel.locator(f'[class*="{self.TAB}."]').count():
            pytest.skip(f"the {self.TAB} page shows none of its elements yet (it is still a placeholder); "
                        f"its flow needs {', '.join(self.NEEDS)}")
        if self.missing():
            open_accordions(panel)  # a closed accordion's inputs are not in the page until it opens
        assert not self.missing(), (f"the {self.TAB} page is built but has no element registered as "
                                    f"{self.missing()}; if one was renamed, update {type(self).__name__}.NEEDS "
                                    "in tests/e2e/console.py")
        return self

    def missing(self) -> list[str]:
        return [f"{self.TAB}.{n}" for n in self.NEEDS if self.el(n).count() == 0]

    def el(self, name: str):
        return self.c.el(f"{self.TAB}.{name}")

    def fill(self, name: str, value: str) -> None:
        """Type into a textbox or number field."""
        box = self.el(name).locator("textarea, input").first
        box.fill(str(value))
        box.press("Tab")

    def choose(self, name: str, option: str, exact: bool = False) -> None:
        """Pick the first option of a dropdown whose shown text is (or contains) ``option``."""
        self.el(name).locator("input").first.click()
        self.c.page.get_by_role("option", name=option, exact=exact).first.click()

    def click(self, name: str) -> None:
        self.el(name).click()

    def text(self, name: str) -> str:
        return self.el(name).inner_text()


def open_accordions(panel) -> None:
    for header in panel.locator("button.label-wrap:not(.open)").all():
        if header.is_visible():
            header.click()


def plot_drawn(locator):
    """The chart a ``gr.LinePlot``/``gr.BarPlot`` draws (Gradio renders it with Vega, as an svg)."""
    return locator.locator("canvas, svg.marks").first


def chart_marks(locator) -> int:
    """How many data marks (bars, lines, points) the chart draws: Vega puts them in ``g.role-mark``
    groups, apart from its axes, grid and labels, so an empty chart has none."""
    return locator.locator("svg g.role-mark path").count()


class DatasetsPage(Page):
    TAB = "datasets"
    NEEDS = ("task", "name", "file", "upload", "status", "preview", "balance")

    def upload(self, path: Path, name: str, task: str) -> None:
        self.choose("task", task, exact=True)
        self.fill("name", name)
        self.el("file").locator('input[type="file"]').set_input_files(str(path))
        self.c.expect(self.el("file")).to_contain_text(path.name)
        self.c.close_toasts()
        self.click("upload")
        self.c.wait_for_text(self.el("status"), "Uploaded", timeout_s=120)


class NewJobPage(Page):
    TAB = "new_job"
    # the form's inputs are generated from JobSpec, each registered as "new_job.<the field's path>"
    NEEDS = ("task", "dataset.id", "epochs", "max_steps", "num_workers", "max_seq_length", "plan", "submit",
             "plan_text", "commands", "status")

    def submit_tiny(self, task: str, dataset: str, max_steps: int) -> None:
        """Fill what a tiny job needs (the form's defaults do the rest), plan it, then submit it."""
        self.choose("task", task, exact=True)
        self.choose("dataset.id", dataset)
        self.fill("epochs", "")  # a job sets exactly one of epochs and max_steps
        self.fill("max_steps", str(max_steps))
        self.fill("num_workers", "1")
        self.fill("max_seq_length", "64")
        self.c.close_toasts()
        self.click("plan")
        self.c.wait_for_text(self.el("plan_text"), "memory per worker")
        self.c.expect(self.el("commands")).to_contain_text("ray job submit")
        self.click("submit")
        self.c.wait_for_text(self.el("status"), "Submitted")


class JobsPage(Page):
    TAB = "jobs"
    NEEDS = ("list", "refresh", "pick", "header", "loss", "dev", "report")

    def show(self, job_id: str) -> None:
        self.click("refresh")
        self.c.expect(self.el("list")).to_contain_text(job_id, timeout=60_000)
        self.choose("pick", job_id)


class ModelsPage(Page):
    TAB = "models"
    NEEDS = ("refresh", "models", "model", "name", "deploy", "deployments")

    def deploy(self, model: str, name: str) -> None:
        self.click("refresh")  # the model was registered after sign-in
        self.c.expect(self.el("models")).to_contain_text(model, timeout=60_000)
        self.choose("model", model)
        self.fill("name", name)
        self.click("deploy")


class PlaygroundPage(Page):
    TAB = "playground"
    NEEDS = ("deployment", "refresh", "text", "run", "labels")

    def classify(self, endpoint: str, text: str) -> None:
        self.click("refresh")
        self.choose("deployment", endpoint)
        self.fill("text", text)
        self.click("run")
