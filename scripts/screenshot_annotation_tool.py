"""Take the README's screenshot of the browser annotation tool (``docs/images/annotation_tool.png``).

A throw-away project holding samkit's own demo image (``samkit/assets/sample.png``, no benchmark data),
a real ``samkit serve`` app on loopback with samkit_tiny, and Debian's chromium under Playwright: log in,
open the image, accept four box-prompted masks under labels, box a fifth object and shoot the page.

    python scripts/screenshot_annotation_tool.py [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from samkit.server.app import create_app
from samkit.server.settings import Settings
from samkit.server.threaded import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samkit" / "assets" / "sample.png"
DEFAULT_OUT = ROOT / "docs" / "images" / "annotation_tool.png"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "screenshot-pass-1"
# (label, box prompt on samkit/assets/sample.png as (x0, y0, x1, y1)); the last one is left unaccepted
OBJECTS = [("box", (58, 58, 202, 172)), ("disc", (248, 168, 392, 312)), ("triangle", (418, 58, 592, 212)),
           ("ellipse", (68, 298, 292, 422)), ("ring", (438, 298, 602, 442))]


def _screen(page: Page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) in the canvas's current view."""
    view = json.loads(page.get_attribute("#prompt-layer", "data-view") or "{}")
    box = page.locator("#prompt-layer").bounding_box()
    assert box is not None
    return box["x"] + view["ox"] + (x + 0.5) * view["scale"], box["y"] + view["oy"] + (y + 0.5) * view["scale"]


def _box(page: Page, x0: int, y0: int, x1: int, y1: int) -> None:
    """Drag a box prompt from (x0, y0) to (x1, y1) (image pixels) and wait for its decode."""
    before = int(page.get_attribute("#mask-layer", "data-decodes") or 0)
    page.mouse.move(*_screen(page, x0, y0))
    page.mouse.down()
    page.mouse.move(*_screen(page, x1, y1), steps=8)
    page.mouse.up()
    page.wait_for_function(f"+document.querySelector('#mask-layer').dataset.decodes > {before}")


def shoot(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        (project / "images").mkdir(parents=True)
        shutil.copy(SAMPLE, project / "images" / SAMPLE.name)
        app = create_app(Settings(project, admin_password=PASSWORD))
        with serve_in_thread(app) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.set_default_timeout(120_000)
            page.goto(url + "/")
            page.fill("#username", "admin")
            page.fill("#password", PASSWORD)
            page.click("#login-button")
            page.wait_for_selector("#image-table")
            page.click("tr[data-image-id='1'] a")
            page.wait_for_selector("#prompt-layer[data-ready='1']")
            for n, (label, _) in enumerate(OBJECTS, start=1):
                page.fill("#new-label", label)
                page.click("#label-form button")
                page.wait_for_selector(f"#label-list li.label >> nth={n - 1}")
            for n, (_, box) in enumerate(OBJECTS, start=1):
                page.click("#prompt-layer", position={"x": 5, "y": 5}, button="middle")  # focus the canvas
                page.keyboard.press(str(n))  # the label's number key
                page.keyboard.press("x")  # the box tool
                _box(page, *box)
                if n < len(OBJECTS):
                    page.keyboard.press("Enter")
                    page.wait_for_selector(f"#mask-list li.mask-row >> nth={n - 1}")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    shoot(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
