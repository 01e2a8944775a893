"""The Gradio demo: its functions, and an API round trip with gradio_client against a locally launched app,
including attempts to make it read a file that is not an upload."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modeling_maskformer import MaskFormerImageProcessor

from builders import tiny_model

gr = pytest.importorskip("gradio", reason="needs the [app] extra: pip install -e '.[app]'")
from modeling_maskformer.inference.app import (  # noqa: E402
    TASKS,
    Limits,
    Segmenter,
    UploadError,
    build_demo,
    example_images,
    launch,
    read_upload,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app-model")
    model = tiny_model(id2label={0: "circle", 1: "square", 2: "sky"}, label2id={"circle": 0, "square": 1, "sky": 2})
    model.save_pretrained(folder)
    MaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    return folder


def write_image(path, size=(80, 60), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_examples_are_bundled():
    names = {path.name for path in example_images()}
    assert {"grace_hopper.jpg", "synthetic_scene_1.jpg"} <= names


def test_read_upload_checks(tmp_path):
    roots = [tmp_path]
    assert read_upload(write_image(tmp_path / "ok.png"), roots=roots).size == (80, 60)
    with pytest.raises(UploadError, match="Upload an image first"):
        read_upload(None, roots=roots)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(UploadError, match="Could not read the upload as an image"):
        read_upload(tmp_path / "text.jpg", roots=roots)
    with pytest.raises(UploadError, match="megapixels"):
        read_upload(write_image(tmp_path / "big.png", (300, 200)), Limits(max_pixels=50_000), roots=roots)
    with pytest.raises(UploadError, match="MB"):
        read_upload(write_image(tmp_path / "heavy.png"), Limits(max_bytes=100), roots=roots)
    with pytest.raises(UploadError, match="at least 32"):
        read_upload(write_image(tmp_path / "thin.png", (100, 10)), roots=roots)
    shrunk = read_upload(write_image(tmp_path / "wide.png", (400, 100)), Limits(display_side=200), roots=roots)
    assert shrunk.size == (200, 50)


def test_read_upload_refuses_paths_outside_the_upload_folders(tmp_path):
    outside = write_image(tmp_path / "secret.png")
    with pytest.raises(UploadError, match="not an upload"):
        read_upload(outside, roots=[tmp_path / "uploads"])
    with pytest.raises(UploadError, match="not an upload"):
        read_upload("/etc/hostname")  # default roots: Gradio's upload folder and the examples
    with pytest.raises(UploadError, match="not an upload"):
        read_upload(str(example_images()[0].parent / ".." / ".." / "__init__.py"))


def test_segmenter_tasks(model_dir, tmp_path):
    from modeling_maskformer.inference.app import load_model

    segmenter = Segmenter(*load_model(model_dir))
    image = read_upload(write_image(tmp_path / "x.png", (90, 70)), roots=[tmp_path])
    for task in TASKS:
        overlay, rows = segmenter(image, task, threshold=0.0)
        assert overlay.height >= 70 and overlay.width > 90  # overlay plus legend
        assert all(row[0] in {"circle", "square", "sky"} for row in rows)
        assert sum(row[2] for row in rows) <= 100.01
        assert all(row[1] is None for row in rows) if task == "semantic" else all(0 <= row[1] <= 1 for row in rows)
    semantic_rows = segmenter(image, "semantic")[1]
    assert abs(sum(row[2] for row in semantic_rows) - 100) < 0.1  # every pixel has a class
    with pytest.raises(UploadError, match="Unknown task"):
        segmenter(image, "depth")


@pytest.fixture(scope="module")
def running_app(model_dir):
    demo = build_demo(model_dir, limits=Limits(max_bytes=200_000))
    _, url, _ = launch(demo, port=None, limits=Limits(max_bytes=200_000), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def test_api_round_trip(running_app, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(running_app, verbose=False)
    overlay, table = client.predict(
        handle_file(str(example_images()[0])), "semantic", 0.5, 0.5, 0.8, api_name="/segment"
    )
    picture = Image.open(overlay)
    assert picture.width > picture.height  # the legend panel widens it
    assert table["headers"] == ["label", "score", "area %"] and table["data"]
    _, table = client.predict(
        handle_file(str(write_image(tmp_path / "a.png"))), "panoptic", 0.0, 0.5, 0.8, api_name="/segment"
    )
    assert all(0 <= row[1] <= 1 for row in table["data"])
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(Exception, match="Could not read the upload as an image"):
        client.predict(handle_file(str(tmp_path / "bad.jpg")), "panoptic", 0.5, 0.5, 0.8, api_name="/segment")


def test_visitor_cannot_make_it_read_another_path(running_app, tmp_path):
    import httpx

    secret = tmp_path / "secret.png"
    write_image(secret)
    base = running_app.rstrip("/")
    for target in (str(secret), "/etc/hostname"):
        assert httpx.get(f"{base}/gradio_api/file={target}").status_code == 403
        # a forged file reference (a path instead of an upload) in an API call
        payload = {"data": [{"path": target, "meta": {"_type": "gradio.FileData"}}, "semantic", 0.5, 0.5, 0.8]}
        event = httpx.post(f"{base}/gradio_api/call/segment", json=payload).json()["event_id"]
        stream = httpx.get(f"{base}/gradio_api/call/segment/{event}", timeout=60).text
        assert "event: error" in stream and "event: complete" not in stream


def test_upload_size_limit_is_enforced_by_the_server(running_app, tmp_path):
    import httpx

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(big)  # ~480 kB
    assert big.stat().st_size > 200_000
    with big.open("rb") as handle:
        response = httpx.post(f"{running_app.rstrip('/')}/gradio_api/upload", files={"files": handle})
    assert response.status_code == 413


def test_model_is_not_a_page_control(model_dir):
    demo = build_demo(model_dir)
    config = demo.get_config_file()
    labels = [c.get("props", {}).get("label") for c in config["components"]]
    assert "image" in labels and not any(label and "model" in label.lower() for label in labels)
    assert all(c.get("type") not in ("textbox", "file", "fileexplorer", "code") for c in config["components"])
    demo.close()


def test_listens_on_localhost_by_default(model_dir, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    demo = build_demo(model_dir)
    launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        assert demo.server_name == "127.0.0.1"
    finally:
        demo.close()
