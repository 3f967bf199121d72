"""The command line never loses the user's files (issue 13): it never writes over an input or
over a file it did not create, its manifest never lies about the folder (also after Ctrl-C),
and every problem with the output folder is one line with exit status 2 (Ctrl-C: 130)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import netlens.export
import netlens.gallery
from netlens.data import make_shapes
from netlens.export import save_image

from helpers import one_line_error as _one_line_error
from helpers import run_cli as _run

FAST = ["--method", "saliency", "--target", "0", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def shape_png(tmp_path_factory):
    """One shapes image saved as a 96 px PNG: larger than the model's 64 px copy of it."""
    folder = tmp_path_factory.mktemp("images")
    image = make_shapes(1, seed=3, size=96).images[0]
    return str(save_image(folder / "shape0.png", image))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. never write over an input ----------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["d/shape0.png", "d/../d/shape0.png"])
def test_the_input_image_is_never_written_over(tmp_path, capsys, shape_png, monkeypatch,
                                               spelling):
    (tmp_path / "d").mkdir()
    photo = tmp_path / "d" / "shape0.png"
    photo.write_bytes(Path(shape_png).read_bytes())
    before = _snapshot(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    status, _, err = _run(capsys, "attribute", spelling, *FAST, "-o", "d")
    assert status == 2
    line = _one_line_error(err)
    assert "shape0.png" in line and "input" in line and "-o" in line
    assert _snapshot(tmp_path / "d") == before  # refused before anything was written
    with Image.open(photo) as im:
        assert im.size == (96, 96)


def test_an_input_named_like_an_output_is_never_written_over(tmp_path, capsys, shape_png):
    curves = tmp_path / "curves.png"  # eval's curves picture has this name
    curves.write_bytes(Path(shape_png).read_bytes())
    before = _snapshot(tmp_path)
    status, _, err = _run(capsys, "eval", curves, "--method", "saliency", "--metric",
                          "deletion", "--quiet", "--device", "cpu", "-o", tmp_path)
    assert status == 2
    line = _one_line_error(err)
    assert "curves.png" in line and "input" in line
    assert _snapshot(tmp_path) == before


# -- 2. never write over a file netlens did not create ----------------------------------------
@pytest.mark.parametrize("name", ["shape0.png", "shape0_saliency_0.npy", "manifest.json"])
def test_a_file_netlens_did_not_write_is_never_replaced(tmp_path, capsys, shape_png, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"the user's own file")
    status, _, err = _run(capsys, "attribute", shape_png, *FAST, "-o", out)
    assert status == 2
    line = _one_line_error(err)
    assert str(out / name) in line and "-o" in line and "remove" in line
    assert _snapshot(out) == {name: b"the user's own file"}  # nothing else written either


def test_a_later_run_replaces_what_netlens_wrote_and_remembers_the_rest(tmp_path, capsys,
                                                                       shape_png):
    out = tmp_path / "out"
    common = [shape_png, "--target", "0", "--quiet", "--device", "cpu", "-o", out]
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("mine")  # no output's name: it does not stop netlens
    assert _run(capsys, "attribute", *common, "--method", "saliency")[0] == 0
    assert _run(capsys, "attribute", *common, "--method", "gradcam")[0] == 0
    status, _, err = _run(capsys, "attribute", *common, "--method", "saliency")
    assert status == 0, err  # the first run's files are still known to be netlens's
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {"shape0.png", "shape0_saliency_0.png",
                                                      "shape0_saliency_0.npy", "index.html"}
    assert sorted(manifest["earlier_files"]) == ["shape0_gradcam_0.npy", "shape0_gradcam_0.png"]
    assert manifest["complete"] is True and (out / "notes.txt").read_text() == "mine"
    status, _, err = _run(capsys, "attribute", *common, "--method", "gradcam")
    assert status == 0, err


def test_a_symlink_in_the_output_folder_is_not_followed(tmp_path, capsys, shape_png):
    out = tmp_path / "out"
    assert _run(capsys, "attribute", shape_png, *FAST, "-o", out)[0] == 0
    precious = tmp_path / "precious.npy"
    precious.write_bytes(b"keep")
    target = out / "shape0_saliency_0.npy"  # listed by netlens's manifest, now a link
    target.unlink()
    target.symlink_to(precious)
    status, _, err = _run(capsys, "attribute", shape_png, *FAST, "-o", out)
    assert status == 2 and "shape0_saliency_0.npy" in _one_line_error(err)
    assert precious.read_bytes() == b"keep"


# -- 3. the manifest: atomic, last, never lying; Ctrl-C --------------------------------------
def test_the_manifest_is_written_to_a_temporary_file_and_renamed_over(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"x")
    netlens.export.write_manifest(tmp_path, command="first", params={}, seed=0,
                                  files=[{"path": "a.png", "kind": "image"}])
    seen = []
    real = os.replace

    def replace(src, dst):
        # at the moment of the rename the old manifest is whole and the new one complete
        seen.append((json.loads(Path(dst).read_text())["command"],
                     json.loads(Path(src).read_text())["command"], Path(src).parent))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    netlens.export.write_manifest(tmp_path, command="second", params={}, seed=0,
                                  files=[{"path": "a.png", "kind": "image"}])
    assert seen == [("first", "second", tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "manifest.json"]


def test_ctrl_c_mid_run_leaves_no_lying_manifest(tmp_path, capsys, shape_png, monkeypatch):
    out = tmp_path / "out"
    assert _run(capsys, "attribute", shape_png, *FAST, "-o", out)[0] == 0
    assert json.loads((out / "manifest.json").read_text())["files"]

    def interrupted(path, tensor):
        raise KeyboardInterrupt

    monkeypatch.setattr(netlens.export, "save_array", interrupted)
    status, _, err = _run(capsys, "attribute", shape_png, "--method", "gradcam", "--target", "0",
                          "--quiet", "--device", "cpu", "-o", out)
    assert status == 130
    line = _one_line_error(err)
    assert "interrupted" in line and "shape0_gradcam_0.png" in line and "no manifest" in line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["files"] == []
    assert "shape0_gradcam_0.png" in manifest["netlens_files"]  # so a rerun may replace it
    monkeypatch.undo()
    status, _, err = _run(capsys, "attribute", shape_png, "--method", "gradcam", "--target", "0",
                          "--quiet", "--device", "cpu", "-o", out)
    assert status == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert {f["path"] for f in manifest["files"]} == {"shape0.png", "shape0_gradcam_0.png",
                                                      "shape0_gradcam_0.npy", "index.html"}


@pytest.mark.parametrize("where", ["netlens.cli._parser", "netlens._cli_io.load_model"])
def test_ctrl_c_during_start_up_is_one_line_and_status_130(tmp_path, capsys, shape_png,
                                                          monkeypatch, where):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupted)
    status, _, err = _run(capsys, "attribute", shape_png, *FAST, "-o", tmp_path / "out")
    assert status == 130 and "interrupted; no files written" in _one_line_error(err)
    assert not (tmp_path / "out").exists()


# -- 4. OS errors on the output folder -------------------------------------------------------
@pytest.mark.parametrize("under", ["file.png/out", "file.png"])
def test_an_output_folder_under_a_file_is_one_line_and_status_2(tmp_path, capsys, shape_png,
                                                                under):
    (tmp_path / "file.png").write_bytes(b"a file")
    status, _, err = _run(capsys, "attribute", shape_png, *FAST, "-o", tmp_path / under)
    assert status == 2
    line = _one_line_error(err)
    assert str(tmp_path / "file.png") in line and "not a folder" in line
    assert (tmp_path / "file.png").read_bytes() == b"a file"


def test_a_folder_that_cannot_be_created_is_one_line_and_status_2(tmp_path, capsys, shape_png,
                                                                  monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    status, _, err = _run(capsys, "attribute", shape_png, *FAST, "-o", tmp_path / "out")
    assert status == 2
    line = _one_line_error(err)
    assert str(tmp_path / "out") in line and "permission denied" in line.lower()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions, which root bypasses")
def test_a_read_only_folder_is_one_line_and_status_2(tmp_path, capsys, shape_png):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        status, _, err = _run(capsys, "attribute", shape_png, *FAST, "-o", out)
    finally:
        out.chmod(0o700)
    assert status == 2 and str(out) in _one_line_error(err)


def test_a_write_that_fails_mid_run_is_one_line_and_status_2(tmp_path, capsys, shape_png,
                                                             monkeypatch):
    def full(path, tensor):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(netlens.export, "save_array", full)
    out = tmp_path / "out"
    status, _, err = _run(capsys, "attribute", shape_png, *FAST, "-o", out)
    assert status == 2
    line = _one_line_error(err)
    assert str(out / "shape0_saliency_0.npy") in line and "No space left" in line
    assert json.loads((out / "manifest.json").read_text())["complete"] is False


# -- the demo: its many names are not known up front ------------------------------------------
def test_the_demo_refuses_a_folder_with_files_netlens_did_not_write(tmp_path, capsys,
                                                                   monkeypatch):
    calls = []
    monkeypatch.setattr(netlens.gallery, "run", lambda out_dir, **kw: calls.append(out_dir))
    (tmp_path / "index.html").write_text("the user's page")
    status, _, err = _run(capsys, "demo", "-o", tmp_path, "--quiet", "--device", "cpu")
    assert status == 2 and str(tmp_path / "index.html") in _one_line_error(err)
    assert calls == [] and (tmp_path / "index.html").read_text() == "the user's page"


def test_ctrl_c_during_the_demo_leaves_no_lying_manifest(tmp_path, capsys, monkeypatch):
    (tmp_path / "old.png").write_bytes(b"png")
    netlens.export.write_manifest(tmp_path, command="netlens demo", params={}, seed=0,
                                  files=[{"path": "old.png", "kind": "image"}])

    def interrupted(out_dir, **options):
        (Path(out_dir) / "attribution").mkdir()
        (Path(out_dir) / "attribution" / "a.png").write_bytes(b"png")
        raise KeyboardInterrupt

    monkeypatch.setattr(netlens.gallery, "run", interrupted)
    status, _, err = _run(capsys, "demo", "-o", tmp_path, "--quiet", "--device", "cpu")
    assert status == 130 and "attribution/a.png" in _one_line_error(err)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["files"] == []
    assert manifest["netlens_files"] == ["attribution/a.png", "old.png"]
