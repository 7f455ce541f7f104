"""report.html of a tiny run, opened in headless Chromium (Debian's ``chromium``, driven by Playwright).

The run is both studies with bundle runs and nnU-Net replaced (``study_fakes``); the report stage,
its page, the NiiVue bundle and the run's NIfTI files are real. The output folder is served on
localhost and every request outside it is refused, so the page must work offline.

``REPORT_SCREENSHOT=<path>`` saves the page's screenshot there (the README's picture is made so).
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import study_fakes

from shared.workflow.pipeline import run_studies
from shared.workflow.report_html import viewer_bundle
from shared.workflow.settings import STUDIES, resolve_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Headless, no sandbox (CI runs as root), WebGL on the CPU (SwiftShader), none of Chromium's own traffic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
SMALL = {
    "n_brains": 6, "n_tumours": 6, "n_generated": 3, "nnunet_seeds": 1,
    "fidelity": {"feature_iterations": 20, "resamples": 20},
    "ventricle_holdout": ((3, 4.0, 7.0),), "tumour_holdout": ((3, None, None),),
}  # fmt: skip

have_browser = Path(CHROMIUM).is_file() and find_spec("playwright") is not None and viewer_bundle() is not None
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not have_browser and not os.environ.get("REQUIRE_BROWSER_TESTS"),
        reason="needs Debian's chromium (scripts/setup_browser.sh), playwright and NiiVue (scripts/setup_env.sh)",
    ),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Both studies of a tiny run (starter generators, faked bundle runs and nnU-Net)."""
    out = tmp_path_factory.mktemp("tiny_run")
    settings = resolve_settings("demo", **SMALL)
    with pytest.MonkeyPatch.context() as monkeypatch:
        study_fakes.install(monkeypatch, out, [])
        run_studies(out, settings, list(STUDIES))
    return out


@pytest.fixture(scope="module")
def served(tiny_run):
    """``http://127.0.0.1:<port>``, serving the run's folder and nothing else."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tiny_run))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def viewer_data(out: Path) -> dict:
    page = (out / "report.html").read_text()
    start = page.index('<script id="viewer-data" type="application/json">') + len(
        '<script id="viewer-data" type="application/json">'
    )
    return json.loads(page[start : page.index("</script>", start)].replace("<\\/", "</"))


def test_the_page_names_the_runs_own_volumes_relatively_and_carries_no_copy(tiny_run):
    data = viewer_data(tiny_run)
    assert [s["study"] for s in data["studies"]] == list(STUDIES)
    for study in data["studies"]:
        assert study["pairs"] and study["holdout"]
        paths = [p[k] for p in study["pairs"] for k in ("image", "label")]
        paths += [h[k] for h in study["holdout"] for k in ("image", "truth")]
        paths += [path for h in study["holdout"] for path in h["predictions"].values()]
        assert all(not Path(path).is_absolute() and (tiny_run / path).is_file() for path in paths)
        assert set(study["variants"]) == set(study["holdout"][0]["predictions"])
    ventricles = data["studies"][0]["label_lists"]
    assert ventricles["pairs"]["4"] == "left-lateral-ventricle" and ventricles["segmentation"]["1"] == "ventricles"
    assert not list(tiny_run.glob("report_assets/*.nii*"))  # volumes referenced, not copied
    assert (tiny_run / "report_assets" / "niivue.js").stat().st_size > 1_000_000
    html = (tiny_run / "report.html").read_text()
    assert "<h2>Answer" in html and "<table>" in html and 'src="generated/ventricles/mosaic.png"' in html


def _canvas_pixels(locator) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=np.float64)


def _pixels_once(locator, page, ready, tries: int = 20) -> np.ndarray:
    """The canvas once ``ready(pixels)`` holds (WebGL on the CPU draws late on a busy machine), else the last try."""
    for _ in range(tries):
        pixels = _canvas_pixels(locator)
        if ready(pixels):
            break
        page.wait_for_timeout(500)
    return pixels


def _save_small_png(png: bytes, path: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def test_the_viewers_draw_offline_with_no_console_error_and_the_overlay_toggles(tiny_run, served):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    refused: list[str] = []

    def only_the_output_folder(route):
        if route.request.url.startswith(served + "/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", only_the_output_folder)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{served}/report.html")
        page.wait_for_function("window.reportViewersReady === true", timeout=120_000)
        assert page.inner_text("#viewer-status") == ""  # every volume loaded
        panel = page.locator(".viewer-panel").first
        panel.scroll_into_view_if_needed()
        canvas = panel.locator("canvas")
        with_overlay = _pixels_once(canvas, page, lambda pixels: pixels.std() > 10)
        if os.environ.get("REPORT_SCREENSHOT"):  # the ventricle viewers, overlays on, as a small PNG
            _save_small_png(page.locator("#viewer-ventricles").screenshot(), Path(os.environ["REPORT_SCREENSHOT"]))
        assert with_overlay.std() > 10  # slices drawn, not a blank canvas
        panel.locator(".overlay-toggle").uncheck()
        without_overlay = _pixels_once(canvas, page, lambda pixels: np.abs(with_overlay - pixels).mean() > 0.5)
        assert np.abs(with_overlay - without_overlay).mean() > 0.5  # the label map's colours are gone
        canvas.click()  # the crosshair readout names the intensity and the label
        page.wait_for_function(
            "document.querySelector('.viewer-readout').textContent.includes('intensity')", timeout=10_000
        )
        studies = viewer_data(tiny_run)["studies"]  # per study: a pair, the truth and up to 3 predictions
        assert page.locator(".viewer-panel").count() == sum(2 + min(3, len(s["variants"])) for s in studies)
        browser.close()
    assert not errors, errors
    assert not refused, refused


def test_opened_as_a_file_the_page_says_how_to_serve_it_and_shows_no_error(tiny_run):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((tiny_run / "report.html").as_uri())
        page.wait_for_function("window.reportViewersReady === true", timeout=30_000)
        assert "python -m http.server" in page.inner_text("#viewer-status")
        assert page.locator("table").count() > 3
        browser.close()
    assert not errors, errors
