"""The ``netlens`` command line: the same maps as the Python API, outputs and manifest, and one
clear line with exit status 2 for every bad path or name."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import netlens.demo
from netlens import image
from netlens.attribution import METHODS
from netlens.cli import main
from netlens.data import SHAPES_CLASSES, make_shapes
from netlens.export import save_image
from netlens.zoo import shapes_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes_files(tmp_path_factory):
    """Two shapes images as PNG files (64 px) and their labels."""
    folder = tmp_path_factory.mktemp("shapes")
    batch = make_shapes(2, seed=11)
    paths = [str(save_image(folder / f"shape{i}.png", batch.images[i])) for i in range(2)]
    return paths, batch.labels


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A random-init resnet18 (seed 0) saved whole with ``torch.save``, and the model."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
    path = tmp_path_factory.mktemp("model") / "resnet18.pt"
    torch.save(model, path)
    return str(path), model


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netlens: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_attribute_on_a_saved_torchvision_model_equals_the_python_api(
        tmp_path, capsys, shapes_files, resnet_file):
    path, model = resnet_file
    img = shapes_files[0][0]
    status, out, err = _run(capsys, "attribute", img, "--model", path, "--method",
                            "gradcam,saliency", "--target", 3, "--size", 64, "--device", "cpu",
                            "-o", tmp_path)
    assert status == 0, err
    x = image.load(img, 64)  # ImageNet normalization, as for every torchvision model
    for method in ("gradcam", "saliency"):
        saved = np.load(tmp_path / f"shape0_{method}_3.npy")
        expected = METHODS[method](model, x, 3).numpy()
        assert saved.shape == expected.shape
        np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-7)
        with Image.open(tmp_path / f"shape0_{method}_3.png") as overlay:
            assert overlay.size == (64, 64) and overlay.mode == "RGB"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["device"] == "cpu"
    assert manifest["params"]["model"] == path
    listed = {f["path"] for f in manifest["files"]}
    written = {p.name for p in tmp_path.iterdir()} - {"manifest.json"}
    assert listed == written and len(listed) == 5  # the input and 2 methods x (PNG, npy)
    raw = [f for f in manifest["files"] if f["kind"] == "array"]
    assert {f["class"] for f in raw} == {"tiger shark"}  # ImageNet class 3
    assert "shape0.png" in out and "3" in out


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch deprecates TorchScript
def test_attribute_on_torchscript_equals_the_python_api(tmp_path, capsys, shapes_files,
                                                        resnet_file):
    path, model = resnet_file
    scripted = tmp_path / "resnet18.ts"
    torch.jit.save(torch.jit.script(model), scripted)
    img = shapes_files[0][1]
    status, _, err = _run(capsys, "attribute", img, "--model", scripted, "--method", "saliency",
                          "--method", "occlusion", "--window", 32, "--stride", 32, "--target",
                          5, "--size", 64, "--device", "cpu", "--quiet", "-o", tmp_path / "out")
    assert status == 0, err
    x = image.load(img, 64)
    for method, options in (("saliency", {}), ("occlusion", {"window": 32, "stride": 32})):
        saved = np.load(tmp_path / "out" / f"shape1_{method}_5.npy")
        expected = METHODS[method](model, x, 5, **options).numpy()
        np.testing.assert_allclose(saved, expected, rtol=1e-4, atol=1e-6)
    # CAMs need hooks on layers, which TorchScript does not allow: a clear refusal, not a crash
    status, _, err = _run(capsys, "attribute", img, "--model", scripted, "--method", "gradcam",
                          "--device", "cpu", "-o", tmp_path / "cam")
    assert status == 2 and "TorchScript" in _one_line_error(err)


def test_attribute_top_k_on_the_shapes_model(tmp_path, capsys, shapes_files):
    paths, _ = shapes_files
    status, out, err = _run(capsys, "attribute", *paths, "--method", "gradcam", "--top", 2,
                            "--device", "cpu", "-o", tmp_path)
    assert status == 0, err
    model = shapes_model()
    x = torch.cat([image.load(p, 64, mean=None, std=None) for p in paths])
    top = model(x).topk(2, dim=-1).indices
    for i in range(2):
        for k in range(2):
            c = int(top[i, k])
            saved = np.load(tmp_path / f"shape{i}_gradcam_{c}.npy")
            np.testing.assert_allclose(saved, METHODS["gradcam"](model, x[i:i + 1], c).numpy(),
                                       rtol=1e-5, atol=1e-6)
    for i in range(2):  # the summary names the predicted class
        assert SHAPES_CLASSES[int(top[i, 0])] in out.splitlines()[i]
    assert len(json.loads((tmp_path / "manifest.json").read_text())["files"]) == 2 + 2 * 2 * 2


def test_one_target_per_image_and_the_seed(tmp_path, capsys, shapes_files):
    paths, _ = shapes_files
    model = shapes_model()
    x = torch.cat([image.load(p, 64, mean=None, std=None) for p in paths])
    args = ["attribute", *paths, "--method", "smooth_grad", "--samples", 4, "--target", 0, 3,
            "--quiet", "--device", "cpu"]
    assert _run(capsys, *args, "--seed", 5, "-o", tmp_path / "a")[0] == 0
    assert _run(capsys, *args, "--seed", 6, "-o", tmp_path / "b")[0] == 0
    for i, c in enumerate((0, 3)):
        expected = METHODS["smooth_grad"](model, x, [0, 3], n=4,
                                          generator=torch.Generator().manual_seed(5))[i:i + 1]
        a = np.load(tmp_path / "a" / f"shape{i}_smooth_grad_{c}.npy")
        b = np.load(tmp_path / "b" / f"shape{i}_smooth_grad_{c}.npy")
        np.testing.assert_allclose(a, expected.numpy(), rtol=1e-5, atol=1e-7)
        assert not np.allclose(a, b)  # another seed, other noise


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    torch.save(shapes_model().state_dict(), folder / "weights.pt")
    return folder


@pytest.mark.parametrize("args, expected", [
    (["attribute", "{missing}"], "does not exist"),
    (["attribute", "{folder}"], "is a folder"),
    (["attribute", "{broken}"], "cannot read image"),
    (["attribute", "{img}", "--method", "gradcm"], "did you mean gradcam"),
    (["attribute", "{img}", "--layer", "layer9"], "did you mean 'layer3'"),
    (["attribute", "{img}", "--target", "9"], "out of range"),
    (["attribute", "{img}", "--top", "5"], "--top must be between 1 and 4"),
    (["attribute", "{img}", "--model", "torchvision:resnet19"], "did you mean resnet18"),
    (["attribute", "{img}", "--model", "resnet50"], "torchvision:NAME"),
    (["attribute", "{img}", "--model", "{missing}.pt"], "does not exist"),
    (["attribute", "{img}", "--model", "{state_dict}"], "torch.save(model, path)"),
    (["attribute", "{img}", "--weights", "DEFAULT"], "torchvision:NAME models only"),
    (["attribute", "{img}", "--method", "saliency", "--window", "8"], "option of occlusion"),
    (["attribute", "{img}", "--size", "-3"], "--size must be"),
    (["attribute", "{img}", "--nonsense"], "unrecognized arguments"),
    (["attribute"], "required: IMAGE"),
    (["visualize", "--channel", "layer9:1"], "did you mean"),
    (["visualize", "--class", "hexagon"], "neither an index nor a class name"),
    (["dream", "{img}", "--octaves", "0"], "octaves must be"),
    (["eval"], "IMAGE files or --shapes N"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, shapes_files, bad_files, args,
                                            expected):
    names = {"missing": tmp_path / "missing.png", "folder": tmp_path,
             "broken": bad_files / "broken.png", "img": shapes_files[0][0],
             "state_dict": bad_files / "weights.pt"}
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in args]
    status, _, err = _run(capsys, *argv, *(["-o", tmp_path / "out"] if len(argv) > 1 else []))
    assert status == 2
    assert expected in _one_line_error(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_asked_for_but_absent(capsys, shapes_files, tmp_path):
    status, _, err = _run(capsys, "attribute", shapes_files[0][0], "--device", "cuda", "-o",
                          tmp_path)
    assert status == 2 and "--device cpu" in _one_line_error(err)


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys, shapes_files):
    def boom(args, argv):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("netlens.cli._attribute", boom)
    status, _, err = _run(capsys, "attribute", shapes_files[0][0])
    assert status == 1 and "RuntimeError: boom second line" in _one_line_error(err)
    with pytest.raises(RuntimeError, match="boom"):
        main(["attribute", shapes_files[0][0], "--debug"])


def test_demo_dispatches_to_the_demo_module(monkeypatch, capsys, tmp_path):
    calls = []

    def fake_run(out_dir, **options):
        calls.append((out_dir, options))
        return Path(out_dir) / "manifest.json"

    monkeypatch.setattr(netlens.demo, "run", fake_run)
    status, out, _ = _run(capsys, "demo", "-o", tmp_path, "--small", "--seed", 4, "--device",
                          "cpu")
    assert status == 0 and "manifest.json" in out
    assert _run(capsys, "demo", "--quiet", "--device", "cpu")[0] == 0
    assert calls == [
        (str(tmp_path), {"small": True, "seed": 4, "device": torch.device("cpu"),
                         "progress": True}),
        ("netlens_demo", {"small": False, "device": torch.device("cpu"), "progress": False}),
    ]  # without --seed the demo keeps its own default


def test_help_lists_every_command(capsys):
    status, out, _ = _run(capsys, "--help")
    assert status == 0
    for command in ("demo", "attribute", "dream", "visualize", "style", "eval"):
        assert command in out


def test_dream_visualize_and_style_write_their_images(tmp_path, capsys, shapes_files):
    img = shapes_files[0][0]
    common = ["--quiet", "--device", "cpu", "--seed", 1]
    assert _run(capsys, "dream", img, "--layer", "layer2", "--steps", 2, "--octaves", 2,
                *common, "-o", tmp_path / "dream")[0] == 0
    original = image.load(img, mean=None, std=None)
    dream = image.load(tmp_path / "dream" / "shape0_dream.png", mean=None, std=None)
    assert dream.shape == original.shape and (dream - original).abs().max() > 0.02
    assert _run(capsys, "visualize", "--class", "circle", "--channel", "layer3:5", "--steps", 4,
                "--size", 40, *common, "-o", tmp_path / "vis")[0] == 0
    for name in ("class_0.png", "channel_layer3_5.png"):
        with Image.open(tmp_path / "vis" / name) as im:
            assert im.size == (40, 40)
    status, _, err = _run(capsys, "style", img, shapes_files[0][1], "--model", "shapes",
                          "--steps", 2, "--size", 48, *common, "-o", tmp_path / "style")
    assert status == 0, err
    manifest = json.loads((tmp_path / "style" / "manifest.json").read_text())
    (record,) = manifest["files"]
    assert record["path"] == "shape0_shape1_style.png" and record["style"] >= 0
    with Image.open(tmp_path / "style" / record["path"]) as im:
        assert im.size == (48, 48)


def test_eval_writes_the_metrics_table(tmp_path, capsys):
    status, out, err = _run(capsys, "eval", "--shapes", 3, "--method", "gradcam,random",
                            "--metric", "deletion,pointing_game", "--device", "cpu", "-o",
                            tmp_path)
    assert status == 0, err
    records = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["method"] for r in records] == ["gradcam", "random"]
    assert all(0 <= r["pointing_game"] <= 1 and 0 <= r["deletion"] <= 1 for r in records)
    table = (tmp_path / "metrics.md").read_text()
    assert "| gradcam |" in table and "| gradcam |" in out
    assert (tmp_path / "curves.png").is_file()


def test_python_dash_m_netlens_runs_the_command(tmp_path, monkeypatch, shapes_files):
    monkeypatch.setattr(sys, "argv", ["netlens", "attribute", shapes_files[0][0], "--method",
                                      "saliency", "--quiet", "-o", str(tmp_path)])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module("netlens", run_name="__main__")
    assert exit.value.code == 0 and (tmp_path / "manifest.json").is_file()


@pytest.mark.slow  # a fresh interpreter imports torch: about 3 s idle, 6 s on a busy machine
def test_the_installed_console_script(tmp_path):
    script = shutil.which("netlens", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "netlens"]  # not pip-installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    bad = subprocess.run([*command, "attribute", str(tmp_path / "no.png")], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "does not exist" in _one_line_error(bad.stderr)
