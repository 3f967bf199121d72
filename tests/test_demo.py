"""``netlens demo``: every stage runs end to end, and every file of the manifest is valid."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netlens import demo, gallery
from netlens.attribution import METHODS

from helpers import DEMO_SEED


@pytest.fixture(scope="module")
def manifest(demo_run):
    return json.loads(demo_run["manifest"].read_text(encoding="utf-8"))


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_manifest_records_versions_seed_and_every_parameter(manifest):
    import torchvision

    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["torchvision"] == torchvision.__version__
    assert set(manifest["versions"]) >= {"netlens", "python", "numpy"}
    assert manifest["seed"] == DEMO_SEED and manifest["device"] == "cpu"
    assert manifest["params"] == json.loads(json.dumps(demo.settings(small=True)))
    assert manifest["command"].startswith("netlens demo")
    assert set(manifest["seconds"]) >= {"attribution", "visualization", "dream", "style"}


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_every_file_of_the_manifest_is_a_valid_image_or_array(demo_run, manifest):
    out: Path = demo_run["out"]
    kinds = {}
    for record in manifest["files"]:
        path = out / record["path"]
        assert path.is_file(), record
        kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
        if record["kind"] == "image":
            with Image.open(path) as image:
                assert image.format == "PNG", record
                image.load()  # decodes every pixel: a truncated file raises
                assert 16 <= min(image.size) and max(image.size) <= 4000, (record, image.size)
                assert np.unique(np.asarray(image.convert("L"))).size > 1, f"{record}: flat"
        elif record["kind"] == "array":
            array = np.load(path, allow_pickle=False)
            assert list(array.shape) == record["shape"], record
            if array.dtype != np.bool_:
                assert np.isfinite(array).all(), record
        else:
            assert path.stat().st_size > 100, record
    assert kinds["image"] > 50 and kinds["array"] == len(METHODS) + 1 and kinds["html"] == 1
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == {r["path"] for r in manifest["files"]}


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_every_attribution_method_has_its_raw_map_and_overlays(demo_run, manifest):
    n, size = demo.settings(small=True)["images"], demo.settings(small=True)["image_size"]
    arrays = {r["method"]: r for r in manifest["files"]
              if r["kind"] == "array" and r["stage"] == "attribution"}
    for name in METHODS:
        channels = 1 if METHODS[name].output == "map" else 3
        maps = np.load(demo_run["out"] / arrays[name]["path"])
        assert maps.shape == (n, channels, size, size), name
        assert np.abs(maps).max() > 0, f"{name}: an all-zero map"
        overlays = [r for r in manifest["files"] if r.get("method") == name and r["kind"] ==
                    "image"]
        assert len(overlays) == n, name
    masks = np.load(demo_run["out"] / arrays["masks"]["path"])
    assert masks.dtype == np.bool_ and masks.shape == (n, 1, size, size) and masks.any()


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_every_stage_ran(manifest):
    stages = {r["stage"] for r in manifest["files"]}
    expected = {"attribution", "visualization", "dream", "style", "summary", "gallery"}
    if importlib.util.find_spec("netlens.metrics") is not None:
        expected.add("metrics")
    assert stages == expected
    vis = [r for r in manifest["files"] if r["stage"] == "visualization"]
    assert {r["what"] for r in vis} == {"class", "channel"}
    dream = [r for r in manifest["files"] if r["stage"] == "dream" and "what" in r]
    assert {(r["what"], r["source"]) for r in dream} == {
        (k, s) for k in ("dream", "inversion") for s in ("shapes", "photo")}


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_pictures_are_what_their_stage_made(demo_run):
    out = demo_run["out"]

    def pixels(rel: str) -> np.ndarray:
        with Image.open(out / rel) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float64)

    # style transfer moved the content's pixels; deep dream changed its input
    assert np.abs(pixels("style/output.png") - pixels("style/content.png")).mean() > 2
    dreamed = next((out / "dream").glob("dream_shapes_layer2*.png")).relative_to(out)
    assert np.abs(pixels(str(dreamed)) - pixels("dream/shapes_input.png")).mean() > 1


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_index_html_is_offline_and_references_every_picture(demo_run, manifest):
    page = (demo_run["out"] / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and not re.search(r"(src|href)=\"(https?:)?//", page)
    assert all((demo_run["out"] / s).is_file() for s in sources)
    images = {r["path"] for r in manifest["files"] if r["kind"] == "image"}
    assert images == set(sources)
    assert "data-loaded" in page and "<script>" in page


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_the_run_leaves_the_global_rng_alone(demo_run):
    assert demo_run["rng_untouched"]


def test_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        demo.make_context(seed=-1)


@pytest.mark.slow  # the reduced demo runs once, about 8 s
def test_the_demo_stages_read_the_method_specs(demo_run):
    """Progress bars, generators and families come from the specs, not from name lists."""
    stage = demo_run["results"]["attribution"]
    assert [g for g in stage.groups if g != "input"] == list(METHODS)
    for name, spec in METHODS.items():
        assert {item.params["family"] for item in stage.groups[name]} == {spec.family}


def test_run_writes_what_netlens_demo_records(monkeypatch, tmp_path):
    """:func:`netlens.gallery.run` = make_context + compute + write, with the command line."""
    calls = {}

    def fake_write(out_dir, results, ctx, *, command):
        calls.update(out=out_dir, results=results, ctx=ctx, command=command)
        return tmp_path / "manifest.json"

    monkeypatch.setattr(gallery, "make_context", lambda **kw: calls.setdefault("context", kw))
    monkeypatch.setattr(gallery, "compute", lambda ctx: {"stage": ctx})
    monkeypatch.setattr(gallery, "write", fake_write)
    assert gallery.run(tmp_path, small=True, seed=3, progress=False) == tmp_path / "manifest.json"
    assert calls["context"] == {"small": True, "seed": 3, "device": "cpu", "progress": False}
    assert calls["command"] == f"netlens demo -o {tmp_path} --small"


def test_manifest_refuses_records_it_cannot_vouch_for(tmp_path):
    from netlens.export import save_image, write_manifest

    save_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    ok = write_manifest(tmp_path, command="x", params={"size": (8, 8)}, seed=1,
                        files=[{"path": "a.png", "kind": "image"}])
    assert json.loads(ok.read_text())["params"] == {"size": [8, 8]}
    for bad, error in [({"path": "a.png", "kind": "picture"}, ValueError),
                       ({"path": str(tmp_path / "a.png"), "kind": "image"}, ValueError),
                       ({"path": "../a.png", "kind": "image"}, ValueError),
                       ({"path": "b.png", "kind": "image"}, FileNotFoundError)]:
        with pytest.raises(error):
            write_manifest(tmp_path, command="x", params={}, seed=1, files=[bad])


def test_overlay_outlines_the_mask_and_keeps_the_size(tmp_path):
    from netlens.export import save_overlay

    mask = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    mask[..., 3:9, 3:9] = True
    path = save_overlay(tmp_path / "o.png", torch.rand(1, 3, 12, 12), torch.rand(1, 1, 3, 3),
                        outline=mask, outline_color=(255, 0, 255))
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    painted = (pixels == (255, 0, 255)).all(-1)
    ring = mask[0, 0].numpy() & ~np.pad(mask[0, 0, 4:8, 4:8].numpy(), 4)
    assert pixels.shape == (12, 12, 3) and (painted == ring).all()


def test_html_refuses_absolute_or_remote_pictures(tmp_path):
    from netlens.export import write_html

    for src in ("https://example.org/a.png", "/etc/a.png"):
        with pytest.raises(ValueError, match="relative"):
            write_html(tmp_path / "i.html", title="t",
                       sections=[{"title": "s", "rows": [{"items": [{"src": src}]}]}])
