"""``semseg serve`` as a process on a free loopback port: real HTTP, and the web page driven by
a headless Chromium (Debian's ``chromium`` and ``chromium-driver``, through Selenium)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from semseg.data.synthetic import render_scene
from semseg.labels import LabelSet

from .support import encode

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    path.write_bytes(encode(render_scene(21, 120, 160)[0]))
    return path


@pytest.fixture(scope="module")
def drivable_class(predictor, scene) -> str:
    """The class the tiny model predicts most along the scene's bottom row: served as the
    drivable class (``--classes``), so that the page has a free-space boundary to draw."""
    labels = predictor.predict(np.array(Image.open(scene))).labels
    return predictor.labels.names[int(np.bincount(labels[-1]).argmax())]


@pytest.fixture(scope="module")
def server(checkpoint, drivable_class, tmp_path_factory):
    """``semseg serve`` on 127.0.0.1:<free port>; its base URL once /readyz answers 200."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "semseg", "serve", "--checkpoint", str(checkpoint),
               "--port", str(port), "--max-upload-mb", "1", "--threads", "1",
               "--classes", drivable_class, "--log-level", "warning"]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, f"semseg serve exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"not ready in 120 s:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_serve_answers_over_http_and_refuses_a_huge_content_length_at_once(
    server, checkpoint, drivable_class
):
    assert httpx.get(f"{server}/healthz").json() == {"status": "alive"}
    info = httpx.get(f"{server}/v1/model").json()
    assert info["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert info["drivable_classes"] == [drivable_class] and info["threads"] == 1
    body = encode(render_scene(22, 64, 80)[0])
    segmented = httpx.post(f"{server}/v1/segment", content=body,
                           headers={"Content-Type": "image/png"})  # fmt: skip
    assert segmented.status_code == 200 and segmented.json()["drivable"] is not None
    # Headers announcing a gigabyte, and no body: the answer comes without waiting for it.
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")  # fmt: skip
        reply = b""
        while not reply.endswith(b"}}") and (chunk := s.recv(4096)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b'"payload_too_large"' in reply
    again = httpx.post(f"{server}/v1/segment", content=body, headers={"Content-Type": "image/png"})
    assert again.status_code == 200


# --- the page in a real browser ---


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "no chromium / chromedriver on PATH: apt-get install chromium chromium-driver "
            "(.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(argument)
    # Selenium Manager would look for (and download) drivers; the system one is given here.
    os.environ.setdefault("SE_OFFLINE", "true")
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(30)
    yield session
    session.quit()


def canvas_pixels(browser, element_id: str) -> np.ndarray:
    url = browser.execute_script(f"return document.getElementById('{element_id}').toDataURL()")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_the_page_in_headless_chromium(server, browser, scene, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    find = browser.find_element
    api = httpx.post(f"{server}/v1/segment", content=scene.read_bytes(),
                     headers={"Content-Type": "image/png"}).json()  # fmt: skip
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(api["labels_png"]))))
    model = httpx.get(f"{server}/v1/model").json()
    names = tuple(c["name"] for c in model["classes"])
    label_set = LabelSet(
        names, tuple(tuple(bytes.fromhex(c["color"][1:])) for c in model["classes"])
    )
    colours = label_set.palette()[labels].astype(int)
    image = np.asarray(Image.open(scene).convert("RGB")).astype(int)

    browser.get(server)
    wait.until(lambda b: "unet" in find(By.ID, "model").text)
    find(By.ID, "file-input").send_keys(str(scene))
    wait.until(lambda b: b.execute_script("return document.body.dataset.state") == "done")

    # opacity 50 %: the browser's blend is the image and the class colours half and half
    half = canvas_pixels(browser, "overlay")
    assert half.shape == image.shape
    assert np.abs(half - (image * 0.5 + colours * 0.5)).max() <= 1
    slider = find(By.ID, "opacity")
    slider.send_keys(Keys.END)
    assert find(By.ID, "opacity-value").text == "100%"
    np.testing.assert_array_equal(canvas_pixels(browser, "overlay"), colours)
    ActionChains(browser).click_and_hold(slider).move_by_offset(-400, 0).release().perform()
    assert slider.get_attribute("value") == "0"
    np.testing.assert_array_equal(canvas_pixels(browser, "overlay"), image)
    slider.send_keys(Keys.END)

    # the legend: every class with the API's share; switching the commonest off
    rows = browser.find_elements(By.CSS_SELECTOR, "#legend tr")
    assert [r.find_element(By.CLASS_NAME, "name").text for r in rows] == list(label_set.names)
    shares = [r.find_element(By.CLASS_NAME, "share").text for r in rows]
    assert shares == [f"{100 * c['fraction']:.1f}%" for c in api["classes"]]
    commonest = int(np.bincount(labels.ravel()).argmax())
    rows[commonest].find_element(By.TAG_NAME, "input").click()
    toggled = canvas_pixels(browser, "overlay")
    off = labels == commonest
    np.testing.assert_array_equal(toggled[off], image[off])
    np.testing.assert_array_equal(toggled[~off], colours[~off])
    rows[commonest].find_element(By.TAG_NAME, "input").click()

    # the class under the pointer (WebDriver moves by whole CSS pixels: read back where)
    overlay_canvas = find(By.ID, "overlay")
    browser.execute_script("arguments[0].scrollIntoView()", overlay_canvas)
    scale = overlay_canvas.size["width"] / labels.shape[1]
    for x, y in ((10, 10), (80, 100), (150, 60)):
        dx = round((x + 0.5) * scale - overlay_canvas.size["width"] / 2)
        dy = round((y + 0.5) * scale - overlay_canvas.size["height"] / 2)
        ActionChains(browser).move_to_element_with_offset(overlay_canvas, dx, dy).perform()
        shown = re.fullmatch(r"(.+) \(x (\d+), y (\d+)\)", find(By.ID, "pointer").text)
        name, at_x, at_y = shown[1], int(shown[2]), int(shown[3])
        assert abs(at_x - x) <= 1 and abs(at_y - y) <= 1
        assert name == label_set.names[labels[at_y, at_x]]

    # drivable space: the free-space boundary drawn in yellow on a flat stretch
    boundary = np.array(api["drivable"]["boundary"])
    flat = [x for x in range(2, len(boundary) - 2)
            if boundary[x] >= 0 and (boundary[x - 2 : x + 3] == boundary[x]).all()]  # fmt: skip
    assert flat, "the test image should have a flat stretch of free-space boundary"
    find(By.ID, "drivable").click()
    drawn = canvas_pixels(browser, "overlay")
    x = flat[len(flat) // 2]
    assert tuple(drawn[boundary[x], x]) == (255, 255, 0)

    find(By.CSS_SELECTOR, "#view option[value=side]").click()
    assert find(By.ID, "original").is_displayed()
    np.testing.assert_array_equal(canvas_pixels(browser, "original"), image)
    assert "inference" in find(By.ID, "latency").text and " ms" in find(By.ID, "latency").text
    assert find(By.ID, "download").is_enabled()
    assert not find(By.ID, "error").is_displayed()
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert Image.open(tmp_path / "page.png").size[0] > 0

    # several images: a strip; an undecodable one is explained in words
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is text, not a PNG\n")
    second = tmp_path / "second.png"
    second.write_bytes(encode(render_scene(23, 96, 128)[0]))
    find(By.ID, "file-input").send_keys(f"{second}\n{broken}")
    wait.until(lambda b: b.execute_script("return document.body.dataset.state") == "done")
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#strip img")
    assert len(thumbs) == 2
    thumbs[1].click()
    wait.until(lambda b: b.execute_script("return document.body.dataset.state") == "error")
    error = find(By.ID, "error")
    assert error.is_displayed()
    assert "broken.png: 400: the body is not a PNG" in error.text
    browser.save_screenshot(str(tmp_path / "error.png"))
    thumbs[0].click()
    wait.until(lambda b: b.execute_script("return document.body.dataset.state") == "done")
    assert not find(By.ID, "error").is_displayed()
    assert canvas_pixels(browser, "overlay").shape == (96, 128, 3)
