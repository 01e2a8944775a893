"""The web demo in a real browser (Playwright driving the system Chromium): upload the bundled photos,
segment, switch tasks, and check the overlay with its legend and the segments table render.

Needs the `[app]` extra and a Chromium from the OS packages (`apt-get install chromium`; Playwright's own
browser download needs the network). Skipped, saying which is missing, otherwise. `make test-browser`.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from modeling_maskformer import MaskFormerImageProcessor

from builders import tiny_model

pytest.importorskip("gradio", reason="needs the [app] extra: pip install -e '.[app]'")
playwright = pytest.importorskip("playwright.sync_api", reason="needs the [app] extra (playwright)")

CHROMIUM = os.environ.get("CHROMIUM_PATH") or next(
    (path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found (install the OS package: apt-get install -y chromium, or set CHROMIUM_PATH)",
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ID2LABEL = {0: "circle", 1: "square", 2: "sky"}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from modeling_maskformer.inference.app import build_demo, launch

    folder = tmp_path_factory.mktemp("browser-model")
    tiny_model(id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}).save_pretrained(folder)
    MaskFormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 192}).save_pretrained(folder)
    demo = build_demo(folder)
    _, url, _ = launch(demo, prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_url)
        page.wait_for_selector("#upload")
        yield page
        browser.close()


def overlay_picture(page, previous_src: str | None = None) -> tuple[Image.Image, str]:
    """The overlay <img> once it shows a new picture, fetched through the page."""
    image = page.locator("#overlay img")
    page.wait_for_function(
        "([selector, old]) => { const img = document.querySelector(selector); "
        "return img && img.complete && img.naturalWidth > 0 && img.src !== old; }",
        arg=["#overlay img", previous_src or ""],
    )
    src = image.get_attribute("src")
    body = page.request.get(src).body()
    return Image.open(io.BytesIO(body)).convert("RGB"), src


def table_labels(page) -> list[str]:
    """The first column of the segments table's body rows."""
    script = (
        "rows => rows.map(r => Array.from(r.querySelectorAll('td, [role=gridcell]')).map(c => c.innerText.trim()))"
        ".filter(cells => cells.length > 0)"
    )
    page.wait_for_function(
        f"() => ({script})(Array.from(document.querySelectorAll('#segments [role=row]'))).length > 0"
    )
    return [cells[0] for cells in page.eval_on_selector_all("#segments [role=row]", script) if cells[0]]


def legend_has_swatch(picture: Image.Image, photo_width: int, label: str) -> bool:
    from modeling_maskformer.inference.visualization import class_colour

    class_id = {v: k for k, v in ID2LABEL.items()}[label]
    legend = np.asarray(picture)[:, photo_width:].astype(int)
    colours = [class_colour(class_id, shade) for shade in range(5)]
    return any((np.abs(legend - np.array(c)).max(-1) <= 2).sum() > 20 for c in colours)


def test_upload_segment_and_switch_tasks(page):
    from modeling_maskformer.inference.app import example_images

    photo = next(p for p in example_images() if p.name == "grace_hopper.jpg")
    width = Image.open(photo).width * max(1, -(-256 // min(Image.open(photo).size)))  # draw() enlarges to 256
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    page.locator("#segment").click()
    picture, src = overlay_picture(page)
    assert picture.width > width  # photo + legend panel
    labels = table_labels(page)
    assert labels and set(labels) <= set(ID2LABEL.values())
    assert legend_has_swatch(picture, width, labels[0])

    page.locator("#task").get_by_text("semantic", exact=True).click()  # switching re-runs the segmentation
    picture, src = overlay_picture(page, src)
    labels = table_labels(page)
    assert picture.width > width and all(legend_has_swatch(picture, width, label) for label in labels)

    scene = next(p for p in example_images() if p.name.startswith("synthetic_scene"))
    page.locator("#upload button[aria-label='Remove Image']").first.click()
    page.locator("#upload input[type=file]").set_input_files(str(scene))
    page.locator("#segment").click()
    picture, _ = overlay_picture(page, src)
    assert picture.width > Image.open(scene).width


def test_unreadable_upload_shows_a_message(page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 100)
    clear = page.locator("#upload button[aria-label='Remove Image']")
    if clear.count():
        clear.first.click()
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.locator("#segment").click()
    message = page.get_by_text("Could not read the upload as an image")
    message.first.wait_for(state="visible")
    assert "Traceback" not in page.content()
