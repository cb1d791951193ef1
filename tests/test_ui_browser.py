"""`seesr ui` end to end in a real headless Chromium (issue 8), driven by Playwright.

The page is served in-process on 127.0.0.1 over the SeeSRPipeline built from the tiny official-format weights in
../shared/fixtures: upload a real photo, run, see the before/after result, download the sidecar, edit the tags
(remove one, add one) and re-run, then upload a broken file and read the error in the page. A second test uses a
slow stub pipeline to watch the per-step progress bar and cancel a run. Every request the page makes must stay
on the local server.

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` Python package (its bundled driver only;
no browser download). Set ``SEESR_UI_SCREENSHOT=path.png`` to also save the page screenshot there (docs/ui.png).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("SEESR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio", reason="the `ui` extra (gradio) is not installed")

from seesr.config import SamplingConfig  # noqa: E402
from seesr.ui.app import build_app, serve  # noqa: E402
from tests.test_ui import COFFEE, StubPipeline, tiny_pipeline  # noqa: E402


@pytest.fixture(autouse=True)
def no_outbound_connections(monkeypatch):
    """Fail if the in-process Gradio server (or anything else in this process) connects beyond loopback."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(str(address))
            raise OSError(f"test forbids outbound connections (to {address})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
    assert attempts == [], f"the server tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        br = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield br
        br.close()


class Served:
    """A launched app plus a page that records page errors and every non-local request (aborted)."""

    def __init__(self, browser, app):
        self.app = app
        self.url = serve(app, port=None, block=False)
        self.origin = self.url.rstrip("/")
        self.external: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.goto(self.url)

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.origin) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def status(self) -> str:
        return self.page.inner_text("#seesr-status")

    def wait_status(self, text: str) -> str:
        self.page.locator("#seesr-status", has_text=text).wait_for()
        return self.status()

    def tags(self) -> list[str]:
        return [t.strip() for t in self.page.locator("#seesr-tags .token span").all_inner_texts()]

    def close(self) -> None:
        self.context.close()
        self.app.close()


def _upload(s: Served, path: Path) -> None:
    clear = s.page.locator("#seesr-input button[aria-label='Clear']")
    if clear.count():
        clear.click()  # the file box holds one file: clear it as a user would, then drop the next one
        s.wait_status("Upload an image to start")
    s.page.set_input_files("#seesr-input input[type=file]", str(path))


def _run_and_wait(s: Served, run_no: int) -> None:
    s.page.click("#seesr-run")
    # Each run's file names end in a run counter, so waiting for it cannot match the previous result.
    s.page.locator(f"#seesr-files a[download$='_{run_no:03d}.json']").wait_for()


def test_upload_run_edit_tags_rerun_and_broken_file(browser, tiny_weights_dir, tmp_path):
    started = time.perf_counter()
    pipe = tiny_pipeline(tiny_weights_dir)
    # One step at x2 with a small process size keeps the tiny model's work to seconds on 2 CPU cores.
    defaults = SamplingConfig(num_inference_steps=1, upscale=2.0, process_size=64)
    app = build_app(pipe, output_dir=tmp_path / "out", sampling_defaults=defaults)
    s = Served(browser, app)
    try:
        page = s.page
        assert "Upload an image to start" in s.status()
        _upload(s, tiny_weights_dir / COFFEE)
        assert "DAPE found" in s.wait_status("DAPE found")
        dape_tags = s.tags()
        assert dape_tags, "DAPE's tags should be shown as editable chips"
        page.fill("#seesr-seed input", "123")

        _run_and_wait(s, 1)
        assert "Done in" in s.status() and "128x96" in s.status()
        imgs = page.locator("#seesr-result img")
        assert imgs.count() >= 2  # before and after layers of the slider
        # Both layers decode to the output size (the images load asynchronously after the status line).
        page.wait_for_function(
            "() => [...document.querySelectorAll('#seesr-result img')]"
            ".filter(e => e.complete && e.naturalWidth === 128 && e.naturalHeight === 96).length >= 2"
        )
        assert page.input_value("#seesr-used-prompt textarea").startswith(", ".join(dape_tags))
        links = page.locator("#seesr-files a[download]")
        hrefs = links.evaluate_all("els => els.map(e => e.href)")
        assert [h.rsplit(".", 1)[-1] for h in hrefs] == ["png", "json"]
        sidecar = json.loads(page.request.get(hrefs[1]).text())
        assert sidecar["seed"] == 123 and sidecar["tags"] == dape_tags and sidecar["output_size"] == [128, 96]
        png = page.request.get(hrefs[0]).body()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        shot = tmp_path / "ui.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if os.environ.get("SEESR_UI_SCREENSHOT"):
            shutil.copy(shot, os.environ["SEESR_UI_SCREENSHOT"])

        # Edit: remove the first tag, add a new one, re-run with the edited tags.
        removed = dape_tags[0]
        page.click("#seesr-tags .token-remove[title='Remove 0']")
        combo = page.locator("#seesr-tags input[role=combobox]")
        combo.fill("espresso")
        combo.press("Enter")
        page.locator("#seesr-tags .token", has_text="espresso").wait_for()
        edited = s.tags()
        assert removed not in edited and "espresso" in edited
        _run_and_wait(s, 2)
        used = page.input_value("#seesr-used-prompt textarea")
        assert "espresso" in used and not used.startswith(removed + ",")
        hrefs = page.locator("#seesr-files a[download]").evaluate_all("els => els.map(e => e.href)")
        sidecar2 = json.loads(page.request.get(hrefs[1]).text())
        assert sidecar2["tags"] == edited and sidecar2["tags_override"] is True and sidecar2["seed"] == 123

        # A broken (truncated) PNG: one clear line in the page, the previous result cleared, no image shown.
        data = (tiny_weights_dir / COFFEE).read_bytes()
        broken = tmp_path / "broken.png"
        broken.write_bytes(data[: len(data) // 2])
        _upload(s, broken)
        msg = s.wait_status("Error")
        assert "broken.png" in msg and "truncated" in msg and "Traceback" not in msg
        assert page.locator("#seesr-result img").count() == 0
        assert page.locator("#seesr-files a[download]").count() == 0

        assert s.external == [], f"the page tried to reach outside the local server: {s.external}"
        assert s.errors == [], f"JavaScript errors in the page: {s.errors}"
    finally:
        s.close()
    assert time.perf_counter() - started < 120  # a hang shows up here, not as a stuck CI job


def test_example_preset_progress_bar_and_cancel(browser, tiny_weights_dir, tmp_path):
    stub = StubPipeline(delay=0.4)
    app = build_app(
        stub,
        output_dir=tmp_path / "out",
        examples=[tiny_weights_dir / COFFEE],
        sampling_defaults=SamplingConfig(num_inference_steps=40),
    )
    s = Served(browser, app)
    try:
        page = s.page
        page.get_by_text(Path(COFFEE).name).first.click()  # pick the example instead of uploading
        assert "coffee_48x64.png" in s.wait_status("DAPE found")
        assert s.tags() == ["cup", "coffee", "table"]
        steps = page.locator("#seesr-steps input[type=number]")
        page.locator("#seesr-preset input[value=turbo]").check()
        page.wait_for_function(
            "() => document.querySelector('#seesr-steps input[type=number]').value === '2'"
        )
        page.locator("#seesr-preset input[value=default]").check()
        page.wait_for_function(
            "() => document.querySelector('#seesr-steps input[type=number]').value === '40'"
        )
        assert steps.input_value() == "40"  # back to the page default (sampling_defaults), not 50
        page.click("#seesr-run")
        # Gradio's progress overlay on the outputs shows the pipeline's step counter, e.g. "denoising 3/40".
        page.locator("#seesr-result", has_text="/40").wait_for()
        page.click("#seesr-cancel")
        s.wait_status("Cancel")
        deadline = time.perf_counter() + 10
        while stub.active and time.perf_counter() < deadline:
            time.sleep(0.1)
        assert stub.calls[-1]["sampling"].num_inference_steps == 40  # the knob reached the pipeline
        assert stub.active == 0 and 0 < stub.steps_done < 40  # the pipeline itself stopped, not only the page
        assert page.locator("#seesr-result img").count() == 0
        assert not list((tmp_path / "out").rglob("*.png"))
        assert s.external == [] and s.errors == []
    finally:
        s.close()
