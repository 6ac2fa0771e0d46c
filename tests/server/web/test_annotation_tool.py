"""The browser annotation tool in Debian's chromium against a real server with samkit_tiny: log in, image
list, clicks -> masks (canvas pixels and API), negative click, undo / redo, brush, label + accept, reload,
shortcuts, hover preview, semi-automatic review, jobs and export, and a save conflict shown to the user."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page
from pycocotools.coco import COCO

from samkit.data.masks import mask_to_uncompressed_rle, rle_to_mask
from tests.conftest import DATA
from tests.server.conftest import GRABCUT_IMAGES
from tests.server.web.conftest import ANNOTATOR, LiveServer

pytestmark = pytest.mark.slow
SEMI = {"points_per_side": 4, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.8, "stability_score_offset": 0.1}


def ground_truth(image_id: int) -> np.ndarray:
    """The GrabCut object mask of image ``image_id`` (ids follow GRABCUT_IMAGES)."""
    name = Path(GRABCUT_IMAGES[image_id - 1]).stem
    return np.array(Image.open(DATA / "GrabCut" / "boundary_GT" / f"{name}.bmp")) == 255


def inside_point(mask: np.ndarray) -> tuple[int, int]:
    """The (x, y) of ``mask`` farthest from its border."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def login(page: Page, live: LiveServer, username: str = ANNOTATOR[0], password: str = ANNOTATOR[1]) -> None:
    page.goto(live.url + "/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-button")


def open_image(page: Page, live: LiveServer, image_id: int) -> None:
    login(page, live)
    page.wait_for_selector("#image-table")
    page.click(f"tr[data-image-id='{image_id}'] a")
    page.wait_for_selector("#prompt-layer[data-ready='1']")


def screen(page: Page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) (its centre) in the current view."""
    view = json.loads(page.get_attribute("#prompt-layer", "data-view"))
    box = page.locator("#prompt-layer").bounding_box()
    return box["x"] + view["ox"] + (x + 0.5) * view["scale"], box["y"] + view["oy"] + (y + 0.5) * view["scale"]


def decodes(page: Page) -> int:
    return int(page.get_attribute("#mask-layer", "data-decodes"))


def click(page: Page, x: float, y: float, button: str = "left", modifiers: list | None = None) -> None:
    """Click image pixel (x, y) and wait for its decode to finish."""
    before = decodes(page)
    page.mouse.move(*screen(page, x, y))
    page.click("#prompt-layer", position=_relative(page, x, y), button=button, modifiers=modifiers or [])
    page.wait_for_function(f"+document.querySelector('#mask-layer').dataset.decodes > {before}")


def _relative(page: Page, x: float, y: float) -> dict:
    box = page.locator("#prompt-layer").bounding_box()
    sx, sy = screen(page, x, y)
    return {"x": sx - box["x"], "y": sy - box["y"]}


def drag(page: Page, a: tuple[float, float], b: tuple[float, float], steps: int = 8) -> None:
    page.mouse.move(*screen(page, *a))
    page.mouse.down()
    page.mouse.move(*screen(page, *b), steps=steps)
    page.mouse.up()


def area(page: Page) -> int:
    """The current (unsaved) mask's area in image pixels, as the page states it."""
    return int(page.get_attribute("#mask-layer", "data-area"))


def overlay_pixels(page: Page) -> int:
    """Pixels drawn on the mask canvas (the overlay of all masks shown)."""
    return page.evaluate("""() => {
        const c = document.querySelector('#mask-layer');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n += 1;
        return n;
    }""")


def overlay_at(page: Page, points: list[tuple[int, int]]) -> list[bool]:
    """Whether the mask canvas is drawn at each image pixel (x, y) (pixel centres)."""
    view = json.loads(page.get_attribute("#prompt-layer", "data-view"))
    where = [[round(view["ox"] + (x + 0.5) * view["scale"]), round(view["oy"] + (y + 0.5) * view["scale"])]
             for x, y in points]
    return page.evaluate("""(pts) => {
        const c = document.querySelector('#mask-layer');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return pts.map(([x, y]) => x >= 0 && y >= 0 && x < c.width && y < c.height && d[4 * (y * c.width + x) + 3] > 0);
    }""", where)


def test_wrong_password_refused_then_image_list(page: Page, live: LiveServer) -> None:
    login(page, live, ANNOTATOR[0], "not-the-password")
    page.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
    assert "wrong user name or password" in page.text_content("#login-error")
    assert page.evaluate("localStorage.getItem('samkit.token')") is None
    assert page.locator("#image-table").count() == 0

    page.fill("#password", ANNOTATOR[1])
    page.click("#login-button")
    page.wait_for_selector("#image-table")
    rows = page.locator("#image-table tbody tr")
    assert rows.count() == len(GRABCUT_IMAGES)
    # status filter: mark image 3 done through the API; the filter shows it alone, then all again
    live.call("PUT", "/api/projects/1/images/3/status", {"status": "done"})
    page.select_option("#status-filter", "done")
    page.wait_for_function("document.querySelectorAll('#image-table tbody tr').length === 1")
    assert page.get_attribute("#image-table tbody tr", "data-image-id") == "3"
    assert page.text_content("#image-table tbody tr .status") == "done"
    page.select_option("#status-filter", "")
    page.wait_for_function(f"document.querySelectorAll('#image-table tbody tr').length === {len(GRABCUT_IMAGES)}")
    live.call("PUT", "/api/projects/1/images/3/status", {"status": "new"})


def test_click_negative_undo_brush_accept_reload(page: Page, live: LiveServer) -> None:
    gt = ground_truth(1)
    open_image(page, live, 1)
    assert overlay_pixels(page) == 0

    # a click on the object: a mask appears, on the canvas and mostly on the object
    px, py = inside_point(gt)
    click(page, px, py)
    first = area(page)
    assert first > 500
    drawn = overlay_pixels(page)
    scale = json.loads(page.get_attribute("#prompt-layer", "data-view"))["scale"]
    assert abs(drawn - first * scale**2) < 0.15 * first * scale**2  # the canvas shows that mask
    assert overlay_at(page, [(px, py)]) == [True]

    # a negative click on a part of the mask away from the object shrinks it (else the far end of the mask)
    ys, xs = np.mgrid[0:gt.shape[0]:3, 0:gt.shape[1]:3]
    grid = list(zip(xs.ravel().tolist(), ys.ravel().tolist(), strict=True))
    shown = [p for p, on in zip(grid, overlay_at(page, grid), strict=True) if on]
    outside = [p for p in shown if not gt[p[1], p[0]]]
    far = max(outside or shown, key=lambda p: (p[0] - px) ** 2 + (p[1] - py) ** 2)
    click(page, *far, button="right")
    second = area(page)
    assert second < first

    # undo restores the one-click mask, redo the two-click one; undo again
    page.keyboard.press("Control+z")
    assert area(page) == first
    page.keyboard.press("Control+Shift+z")
    assert area(page) == second
    page.keyboard.press("Control+z")
    assert area(page) == first

    # brush (b) adds a stroke on background the mask does not cover
    covered = set(shown)  # the one-click mask, on the 3-pixel grid
    line = next((x0, y) for y in range(21, gt.shape[0] - 21, 3) for x0 in range(21, gt.shape[1] - 90, 3)
                if not any((x0 + d, y + e) in covered for d in range(-12, 75, 3) for e in range(-12, 13, 3)))
    page.keyboard.press("b")
    assert page.get_attribute("#prompt-layer", "data-tool") == "brush"
    drag(page, line, (line[0] + 60, line[1]))
    brushed = area(page)
    assert brushed > first + 500  # a 60 px stroke of radius 8
    assert overlay_at(page, [(line[0] + 30, line[1])]) == [True]
    page.keyboard.press("v")

    # a label made in the page, picked with its number key; Enter saves through the API
    page.fill("#new-label", "penguin")
    page.click("#label-form button")
    page.wait_for_selector("#label-list li.label")
    page.click("#prompt-layer", position=_relative(page, 5, 5), button="middle")  # focus the canvas
    page.keyboard.press("1")
    assert "selected" in page.get_attribute("#label-list li.label", "class")
    page.keyboard.press("Enter")
    page.wait_for_selector("#mask-list li.mask-row")
    saved = live.annotations(1)
    labels = live.call("GET", "/api/projects/1/labels")
    assert len(saved) == 1 and saved[0]["area"] == brushed and saved[0]["source"] == "manual"
    assert saved[0]["label_id"] == next(lab["id"] for lab in labels if lab["name"] == "penguin")
    mask = rle_to_mask(saved[0]["rle"])
    assert mask[py, px] and mask[line[1], line[0] + 30]
    assert area(page) == 0  # the editor is free for the next object
    assert live.call("GET", "/api/projects/1/images/1")["status"] == "in_progress"

    # a reload keeps the saved mask (drawn, listed) and the sign-in
    page.reload()
    page.wait_for_selector("#mask-list li.mask-row")
    assert page.locator("#mask-list li.mask-row").count() == 1
    assert overlay_pixels(page) > 0.8 * brushed * scale**2
    page.click("#mask-list li.mask-row .toggle-visible")  # hide
    assert overlay_pixels(page) == 0
    page.click("#mask-list li.mask-row .toggle-visible")  # show
    assert overlay_pixels(page) > 0

    # a deleted mask comes back with the server-side undo
    page.click("#mask-list li.mask-row .delete")
    page.wait_for_selector("#mask-list li.mask-row", state="detached")
    assert live.annotations(1) == []
    page.click("#undo-saved")
    page.wait_for_selector("#mask-list li.mask-row")
    assert [a["id"] for a in live.annotations(1)] == [saved[0]["id"]]


def test_shortcuts_zoom_pan_box_polygon(page: Page, live: LiveServer) -> None:
    gt = ground_truth(2)
    open_image(page, live, 2)
    px, py = inside_point(gt)
    click(page, px, py)
    assert page.get_attribute("#mask-layer", "data-candidates") == "3"
    areas = [area(page)]
    for expected in ("1", "2", "0"):  # c and Tab cycle the three candidates
        page.keyboard.press("c" if expected != "2" else "Tab")
        assert page.get_attribute("#mask-layer", "data-candidate") == expected
        areas.append(area(page))
    assert len(set(areas[:3])) > 1 and areas[3] == areas[0]

    # polygon view: vertex count falls as the tolerance grows
    page.click("#polygon-current")
    fine = int(page.get_attribute("#poly-count", "data-vertices"))
    page.fill("#poly-eps", "20")
    page.dispatch_event("#poly-eps", "input")
    coarse = int(page.get_attribute("#poly-count", "data-vertices"))
    assert 3 <= coarse < fine

    page.keyboard.press("Escape")  # clears the current mask
    assert area(page) == 0
    page.keyboard.press("Control+z")
    assert area(page) == areas[0]
    page.keyboard.press("Escape")

    # box: Shift+drag around the object
    ys, xs = np.nonzero(gt)
    before = decodes(page)
    page.keyboard.down("Shift")
    drag(page, (xs.min(), ys.min()), (xs.max(), ys.max()))
    page.keyboard.up("Shift")
    page.wait_for_function(f"+document.querySelector('#mask-layer').dataset.decodes > {before}")
    boxed = area(page)
    assert boxed > 0.5 * gt.sum()

    # the unsaved mask survives a reload (a draft in the page's storage), until Esc clears it
    page.reload()
    page.wait_for_selector("#prompt-layer[data-ready='1']")
    assert area(page) == boxed and "restored" in page.text_content("#banner")
    page.keyboard.press("Escape")
    page.reload()
    page.wait_for_selector("#prompt-layer[data-ready='1']")
    assert area(page) == 0
    page.keyboard.press("Control+z")  # nothing to undo after a reload: the box stays cleared
    assert area(page) == 0
    page.keyboard.down("Shift")
    drag(page, (xs.min(), ys.min()), (xs.max(), ys.max()))
    page.keyboard.up("Shift")
    page.wait_for_function("+document.querySelector('#mask-layer').dataset.decodes > 0")
    boxed = area(page)
    assert boxed > 0.5 * gt.sum()

    # wheel zooms about the cursor; space + drag pans
    view = json.loads(page.get_attribute("#prompt-layer", "data-view"))
    page.mouse.move(*screen(page, px, py))
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"JSON.parse(document.querySelector('#prompt-layer').dataset.view).scale > {view['scale']}")
    zoomed = json.loads(page.get_attribute("#prompt-layer", "data-view"))
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(*[v + 40 for v in screen(page, px, py)], steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    panned = json.loads(page.get_attribute("#prompt-layer", "data-view"))
    assert panned["ox"] == pytest.approx(zoomed["ox"] + 40, abs=2) and panned["scale"] == zoomed["scale"]
    assert area(page) == boxed  # panning is no prompt
    for key, tool in (("e", "eraser"), ("b", "brush"), ("x", "box"), ("v", "point")):
        page.keyboard.press(key)
        assert page.get_attribute("#prompt-layer", "data-tool") == tool

    # a text prompt goes to the server; samkit_tiny has no text encoder: the server's refusal is shown
    page.fill("#text-prompt", "the bird")
    with page.expect_response(lambda r: r.url.endswith("/images/2/predict")) as answer:
        page.press("#text-prompt", "Enter")
    assert answer.value.status == 422
    page.wait_for_selector("#banner.error")
    assert answer.value.json()["detail"] in page.text_content("#banner")


def previews(page: Page) -> int:
    return int(page.get_attribute("#mask-layer", "data-previews") or 0)


def test_hover_preview(page: Page, live: LiveServer) -> None:
    """The pointer resting on an object shows the mask a click there would give, faintly, saving nothing;
    h turns it off and on; a click replaces it with the real mask."""
    gt = ground_truth(3)
    open_image(page, live, 3)
    saved = len(live.annotations(3))
    drawn = overlay_pixels(page)
    px, py = inside_point(gt)
    page.mouse.move(*screen(page, px - 1, py))
    page.mouse.move(*screen(page, px, py))
    page.wait_for_function("+(document.querySelector('#mask-layer').dataset.previews || 0) > 0")
    shown = int(page.get_attribute("#mask-layer", "data-preview-area"))
    assert shown > 500 and area(page) == 0  # a preview is no mask
    assert overlay_pixels(page) > drawn and overlay_at(page, [(px, py)]) == [True]
    assert len(live.annotations(3)) == saved

    # leaving the canvas drops it; h turns previews off (nothing decoded on a later rest), h again on
    page.mouse.move(2, 2)
    assert page.get_attribute("#mask-layer", "data-preview-area") == "0" and overlay_pixels(page) == drawn
    page.click("#prompt-layer", position=_relative(page, 5, 5), button="middle")  # focus the canvas
    page.keyboard.press("h")
    assert not page.is_checked("#hover-preview")
    count = previews(page)
    page.mouse.move(*screen(page, px, py))
    page.wait_for_timeout(600)
    assert previews(page) == count and overlay_pixels(page) == drawn
    page.keyboard.press("h")
    assert page.is_checked("#hover-preview")
    page.mouse.move(*screen(page, px + 1, py))
    page.wait_for_function(f"+document.querySelector('#mask-layer').dataset.previews > {count}")

    # a click: the real mask (same point, so the same top mask), and no preview beside it
    click(page, px + 1, py)
    assert area(page) > 500 and page.get_attribute("#mask-layer", "data-preview-area") == "0"
    page.mouse.move(*screen(page, px + 3, py))
    page.wait_for_timeout(600)
    assert page.get_attribute("#mask-layer", "data-preview-area") == "0"  # prompts exist: no preview
    page.keyboard.press("Escape")


def test_server_decoder_when_asked(page: Page, live: LiveServer) -> None:
    """``?decoder=server``: clicks go to the predict endpoint, and the toolbar says so."""
    page.goto(live.url + "/?decoder=server")
    page.fill("#username", ANNOTATOR[0])
    page.fill("#password", ANNOTATOR[1])
    page.click("#login-button")
    page.click("tr[data-image-id='2'] a")
    page.wait_for_selector("#prompt-layer[data-ready='1']")
    assert page.get_attribute("#decoder-kind", "data-kind") == "server"
    assert "server" in page.text_content("#decoder-kind")
    assert page.is_disabled("#hover-preview")  # no preview through server round trips
    gt = ground_truth(2)
    with page.expect_response(lambda r: r.url.endswith("/images/2/predict")) as answer:
        click(page, *inside_point(gt))
    assert answer.value.status == 200
    masks = answer.value.json()["masks"]
    assert area(page) == masks[0]["area"] > 0


def test_semi_review_accept_fix_reject(page: Page, live: LiveServer) -> None:
    login(page, live)
    page.wait_for_selector("#image-table")
    page.click("#nav a[href$='/jobs']")
    page.fill("#job-params", json.dumps(SEMI))
    page.click("#start-semi")
    page.wait_for_selector("#job-rows tr[data-kind='semi'][data-state='done']", timeout=300_000)

    pending = {i: [a for a in live.annotations(i) if a["status"] == "pending"] for i in (1, 2, 3)}
    image_id = max(pending, key=lambda i: len(pending[i]))
    assert pending[image_id], "the pre-fill job stored no mask to review"
    page.click("#nav a[href$='/images']")
    page.wait_for_selector(f"tr[data-image-id='{image_id}'] td.pending")
    assert page.text_content(f"tr[data-image-id='{image_id}'] td.pending") == str(len(pending[image_id]))
    page.click(f"tr[data-image-id='{image_id}'] a")
    rows = page.locator("#mask-list li.mask-row.pending")
    rows.first.wait_for()
    assert rows.count() == len(pending[image_id])

    first = pending[image_id][0]
    page.click(f"li.mask-row[data-ann-id='{first['id']}'] .review-accept")
    page.wait_for_selector(f"li.mask-row[data-ann-id='{first['id']}'][data-status='accepted']")
    assert live.call("GET", f"/api/projects/1/annotations/{first['id']}")["status"] == "accepted"
    if len(pending[image_id]) > 1:
        second = pending[image_id][1]
        page.click(f"li.mask-row[data-ann-id='{second['id']}'] .review-fix")  # fix: edit, then accept
        assert area(page) == second["area"]
        page.keyboard.press("e")
        x, y, w, h = second["bbox"]
        drag(page, (x, y), (x + w, y + h))
        fixed = area(page)
        assert fixed < second["area"]
        page.keyboard.press("Enter")
        page.wait_for_selector(f"li.mask-row[data-ann-id='{second['id']}'][data-status='accepted']")
        now = live.call("GET", f"/api/projects/1/annotations/{second['id']}")
        assert now["status"] == "accepted" and now["area"] == fixed and now["version"] == second["version"] + 1
    if len(pending[image_id]) > 2:
        third = pending[image_id][2]
        page.click(f"li.mask-row[data-ann-id='{third['id']}'] .review-reject")
        page.wait_for_selector(f"li.mask-row[data-ann-id='{third['id']}']", state="detached")
        assert live.call("GET", f"/api/projects/1/annotations/{third['id']}")["status"] == "rejected"


def test_jobs_export_download_and_retrain_error(page: Page, live: LiveServer, tmp_path: Path) -> None:
    square = np.zeros((321, 481), bool)
    square[100:150, 200:260] = True
    live.call("POST", "/api/projects/1/images/2/annotations", {"rle": mask_to_uncompressed_rle(square)})
    login(page, live)
    page.wait_for_selector("#image-table")
    page.click("#nav a[href$='/jobs']")
    page.select_option("#export-format", "coco")
    page.click("#start-export")
    row = page.locator("#job-rows tr[data-kind='export']").first
    row.locator("button.download").wait_for(timeout=120_000)
    assert row.get_attribute("data-state") == "done"
    with page.expect_download() as info:
        row.locator("button.download").click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == len(GRABCUT_IMAGES)
    areas = {int(a["area"]) for a in coco.loadAnns(coco.getAnnIds())}
    assert int(square.sum()) in areas

    # retrain: started, or the server's refusal shown as it came
    page.click("#start-retrain")
    page.wait_for_function("document.querySelector('#job-error').textContent.length > 0 || "
                           "document.querySelector(\"#job-rows tr[data-kind='retrain']\") !== null")
    error = page.text_content("#job-error")
    assert not error or ("retrain" in error and error.startswith("Could not start retrain: "))
    page.fill("#job-params", "{not json")
    page.click("#start-semi")
    assert "not valid JSON" in page.text_content("#job-error")


def test_conflict_is_shown_and_nothing_lost(page: Page, live: LiveServer) -> None:
    gt = ground_truth(3)
    square = np.zeros(gt.shape, bool)
    square[50:120, 50:150] = True
    ann = live.call("POST", "/api/projects/1/images/3/annotations", {"rle": mask_to_uncompressed_rle(square)})
    open_image(page, live, 3)
    page.click(f"li.mask-row[data-ann-id='{ann['id']}'] .edit")
    assert area(page) == int(square.sum())
    page.keyboard.press("b")
    drag(page, (160, 80), (220, 80))
    mine = area(page)
    assert mine > square.sum()

    # someone else changes the mask meanwhile: saving mine is refused, said so, and my mask stays
    live.call("PATCH", f"/api/projects/1/annotations/{ann['id']}", {"version": ann["version"], "status": "pending"})
    page.keyboard.press("Enter")
    page.wait_for_selector("#conflict:not(.hidden)")
    assert "conflict" in page.text_content("#conflict").lower()
    assert area(page) == mine
    assert live.call("GET", f"/api/projects/1/annotations/{ann['id']}")["area"] == int(square.sum())
    page.click("#conflict-overwrite")
    page.wait_for_selector("#conflict", state="hidden")
    now = live.call("GET", f"/api/projects/1/annotations/{ann['id']}")
    assert now["area"] == mine and now["version"] == ann["version"] + 2 and now["status"] == "accepted"


def test_statistics_page(page: Page, live: LiveServer) -> None:
    """After the tests above saved masks with their time and clicks: the page shows the API's figures."""
    report = live.call("GET", "/api/projects/1/stats")
    manual = report["stages"]["manual"]
    assert manual["masks"] >= 1 and manual["clicks_per_mask"] > 0
    login(page, live)
    page.wait_for_selector("#image-table")
    page.click("#nav a[href$='/stats']")
    page.wait_for_selector("#stage-table")
    row = "#stage-table tr[data-row='manual']"
    assert page.text_content(f"{row} .m-masks") == str(manual["masks"])
    assert page.text_content(f"{row} .m-clicks_per_mask") == f"{manual['clicks_per_mask']:.1f}"
    assert page.locator(f"#annotator-table tr[data-row='{ANNOTATOR[0]}']").count() == 1
    bars = page.locator("svg.plot[data-metric='seconds_per_mask'] rect[data-stage='manual']")
    assert bars.count() == len([d for d in report["days"] if d["stages"]["manual"]["seconds_per_mask"]])
