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

import netlens.gallery
from netlens import image
from netlens import targets as T
from netlens._cli_io import CliError, parse_target, predictions, target_columns
from netlens.attribution import METHODS
from netlens.cli import main
from netlens.data import SHAPES_CLASSES, make_shapes
from netlens.export import save_image
from netlens.zoo import shapes_model

from helpers import one_line_error as _one_line_error
from helpers import run_cli as _run

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
    assert listed == written and len(listed) == 6  # the input, 2 methods x (PNG, npy), index
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
    capsys.readouterr()  # the progress bar of a slow occlusion above
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
    files = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert len(files) == 2 + 2 * 2 * 2 + 1  # inputs, overlays and maps, index.html
    page = (tmp_path / "index.html").read_text()
    for i in range(2):  # one section per image, one row per target with its class name
        for k in range(2):
            c = int(top[i, k])
            assert f"target {c} ({SHAPES_CLASSES[c]})" in page
            assert f'src="shape{i}_gradcam_{c}.png"' in page
        assert f'src="shape{i}.png"' in page
    assert {"path": "index.html", "kind": "html", "stage": "summary"} in files


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
    (["attribute", "{folder}"], "has no image files"),
    (["attribute", "{folder}/*.jpg"], "matches no file"),
    (["attribute", "{broken}"], "cannot read image"),
    (["attribute", "{img}", "--method", "gradcm"], "did you mean gradcam"),
    (["attribute", "{img}", "--layer", "layer9"], "did you mean 'layer3'"),
    (["attribute", "{img}", "--target", "9"], "out of range"),
    (["attribute", "{img}", "--top", "5"], "--top must be between 1 and 4"),
    (["attribute", "{img}", "--model", "torchvision:resnet19"], "did you mean resnet18"),
    (["attribute", "{img}", "--model", "resnet50"], "torchvision:NAME"),
    (["attribute", "{img}", "--model", "{missing}.pt"], "does not exist"),
    (["attribute", "{img}", "--model", "{state_dict}"], "torch.save(model, path)"),
    (["attribute", "{img}", "--weights", "DEFAULT"], "only to torchvision:NAME and timm:NAME"),
    (["attribute", "{img}", "--model-arg", "min_size=64"], "--model-arg applies to"),
    (["attribute", "{img}", "--model", "torchvision:resnet18", "--model-arg", "64"],
     "is not KEY=VALUE"),
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


def test_demo_and_gallery_dispatch_to_the_gallery_module(monkeypatch, capsys, tmp_path):
    calls = []

    def fake_run(out_dir, **options):
        calls.append((out_dir, options))
        return Path(out_dir) / "manifest.json"

    def fake_readme(out_dir, **options):
        calls.append((out_dir, options))
        return []

    monkeypatch.setattr(netlens.gallery, "run", fake_run)
    monkeypatch.setattr(netlens.gallery, "readme", fake_readme)
    status, out, _ = _run(capsys, "demo", "-o", tmp_path, "--small", "--seed", 4, "--device",
                          "cpu")
    assert status == 0 and "manifest.json" in out
    assert _run(capsys, "demo", "--quiet", "--device", "cpu")[0] == 0
    assert _run(capsys, "gallery", "-o", tmp_path, "--small", "--seed", 3, "--quiet")[0] == 0
    assert _run(capsys, "gallery")[0] == 0
    cpu = torch.device("cpu")
    assert calls == [
        (str(tmp_path), {"small": True, "seed": 4, "device": cpu, "progress": True}),
        ("netlens_demo", {"small": False, "device": cpu, "progress": False}),
        (str(tmp_path), {"small": True, "seed": 3, "device": cpu, "progress": False}),
        ("images/readme", {"small": False, "seed": 2026, "device": cpu, "progress": True}),
    ]  # without --seed the demo keeps its own default; the gallery's is the README's


@pytest.mark.parametrize("module, command", [("netlens.demo", "demo"),
                                             ("netlens.gallery", "gallery")])
def test_python_dash_m_demo_and_gallery_are_the_subcommands(monkeypatch, module, command):
    calls = []
    monkeypatch.setattr("netlens.cli.main", lambda argv: calls.append(argv) or 0)
    monkeypatch.delitem(sys.modules, module)  # run fresh, as python -m does
    monkeypatch.setattr(sys, "argv", [module, "-o", "out", "--small"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module(module, run_name="__main__")
    assert exit.value.code == 0 and calls == [[command, "-o", "out", "--small"]]


def test_cli_is_the_only_argument_parser_and_demo_does_not_import_the_gallery():
    import ast

    for path in (ROOT / "netlens").rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        name = path.stem
        tree = ast.parse(path.read_text(encoding="utf-8"))
        main_guard = [n for n in tree.body if isinstance(n, ast.If) and
                      "__main__" in ast.unparse(n.test)]
        guarded = {id(n) for g in main_guard for n in ast.walk(g)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""]
                assert "argparse" not in modules, f"{name}.py parses arguments itself"
                if id(node) not in guarded:
                    assert "cli" not in modules, f"{name}.py imports the cli outside __main__"
                    if name == "demo":
                        assert "gallery" not in modules, "demo.py imports the gallery (a cycle)"


def test_help_lists_every_command(capsys):
    status, out, _ = _run(capsys, "--help")
    assert status == 0
    for command in ("demo", "gallery", "zoo", "layers", "attribute", "dream", "visualize",
                    "style", "eval"):
        assert command in out
    for method, spec in METHODS.items():  # every method, with its summary
        assert f"  {method} " in out and spec.summary in out
    status, out, _ = _run(capsys, "attribute", "--help")
    for form in ("top5", "seg:C", "box:X0,Y0,X1,Y1[:LABEL]", "field:NAME[:TARGET]",
                 "channel:LAYER:C", "hf:NAME", "timm:NAME", "--model-arg"):
        assert form in " ".join(out.split()), form


def test_a_folder_or_a_pattern_stands_for_its_images(tmp_path, capsys, shapes_files):
    paths, _ = shapes_files
    folder = tmp_path / "in"
    folder.mkdir()
    for p in paths:
        shutil.copy(p, folder)
    (folder / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    outputs = {}
    for name, given in (("files", paths), ("folder", [folder]), ("pattern", [folder / "*.png"])):
        status, _, err = _run(capsys, "attribute", *given, "--device", "cpu", "-o",
                              tmp_path / name)
        assert status == 0, err
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        outputs[name] = {f["path"]: np.load(tmp_path / name / f["path"])
                         for f in manifest["files"] if f["path"].endswith(".npy")}
    assert len(outputs["files"]) == 2  # one gradcam map per image
    for name in ("folder", "pattern"):
        assert outputs[name].keys() == outputs["files"].keys()
        for key, value in outputs["files"].items():
            np.testing.assert_array_equal(outputs[name][key], value)


def test_layers_lists_names_types_shapes_and_layouts(capsys):
    status, out, err = _run(capsys, "layers", "--device", "cpu")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "layout"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert rows["layer3"] == ["layer3", "<-", "default", "CAM", "layer", "Sequential",
                              "1x64x16x16", "nchw"]
    assert rows["fc"] == ["fc", "Linear", "1x4", "vector"]
    assert lines[-1] == "38 of 38 layer calls of shapes at 64x64; default CAM layer: layer3"
    status, out, _ = _run(capsys, "layers", "--grep", "layer2.0", "--device", "cpu")
    assert status == 0 and all(line.startswith("layer2.0") for line in out.splitlines()[1:-1])
    status, out, err = _run(capsys, "layers", "torchvision:vit_b_16", "--grep",
                            "encoder_layer_11", "--device", "cpu")
    assert status == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert rows["encoder.layers.encoder_layer_11.ln_1"][-1] == "tokens+1"
    assert "default CAM layer: encoder.layers.encoder_layer_11.ln_1" in out


def test_dream_visualize_and_style_write_their_images(tmp_path, capsys, shapes_files):
    img = shapes_files[0][0]
    common = ["--quiet", "--device", "cpu", "--seed", 1]
    assert _run(capsys, "dream", img, "--layer", "layer2", "--steps", 2, "--octaves", 2,
                *common, "-o", tmp_path / "dream")[0] == 0
    original = image.load(img, mean=None, std=None)
    dream = image.load(tmp_path / "dream" / "shape0_dream.png", mean=None, std=None)
    assert dream.shape == original.shape and (dream - original).abs().max() > 0.02
    photo = tmp_path / "photo.png"  # not square, larger than the model's 64 px: kept as it is
    save_image(photo, torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0)))
    big = tmp_path / "big.png"  # over 512 px: shrunk to 512 on its longer side, aspect kept
    save_image(big, torch.rand(3, 300, 600, generator=torch.Generator().manual_seed(1)))
    assert _run(capsys, "dream", photo, big, "--layer", "layer2", "--steps", 1, "--octaves", 1,
                *common, "-o", tmp_path / "dream2")[0] == 0
    with Image.open(tmp_path / "dream2" / "photo_dream.png") as im:
        assert im.size == (120, 90)
    with Image.open(tmp_path / "dream2" / "big_dream.png") as im:
        assert im.size == (512, 256)
    assert _run(capsys, "visualize", "--class", "circle", "--channel", "layer3:5", "--steps", 4,
                "--size", 40, *common, "-o", tmp_path / "vis")[0] == 0
    for name in ("class_0_circle.png", "channel_layer3_5.png"):  # the class name in the file
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
    agreement = (tmp_path / "reliability.md").read_text()  # 2 methods, 3 images
    assert agreement.startswith("| metric | inter-rater α |") and "| pointing_game |" in agreement
    assert "reliability (Krippendorff's alpha" in out


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


# -- targets beyond classes ----------------------------------------------------------------------
def _same_target(a, b) -> bool:
    """Two targets of the same kind with the same parameters."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return a == b
    if isinstance(a, T.Output):
        return a.field == b.field and _same_target(a.target, b.target)
    if isinstance(a, T.Detection):
        return all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes)) and (
            (a.labels is None and b.labels is None) or
            all(torch.equal(x, y) for x, y in zip(a.labels, b.labels)))
    state_a, state_b = a.state(), b.state()
    if not state_a:
        return vars(a) == vars(b)
    return all((x is None and y is None) or torch.equal(torch.as_tensor(x), torch.as_tensor(y))
               for x, y in zip(state_a.values(), state_b.values()))


@pytest.mark.parametrize("text, expected", [
    ("3", [3]),
    ("3,7", [3, 7]),
    (" 3 , 7 ", [3, 7]),
    ("top5", T.TopK(5)),
    ("seg:15", T.Segmentation(15)),
    ("box:10,20,90,120", T.Detection([torch.tensor([[10.0, 20, 90, 120]])])),
    ("box:1.5,2,30,40.25:3", T.Detection([torch.tensor([[1.5, 2, 30, 40.25]])],
                                         labels=[torch.tensor([3])])),
    ("box:0,0,8,8:dog", T.Detection([torch.tensor([[0.0, 0, 8, 8]])],
                                    labels=[torch.tensor([1])])),
    ("field:aux", T.Output("aux")),
    ("field:logits:3", T.Output("logits", 3)),
    ("field:0:3", T.Output(0, 3)),
    ("field:aux:seg:15", T.Output("aux", T.Segmentation(15))),
    ("field:out:box:0,0,8,8:1", T.Output("out", T.Detection([torch.tensor([[0.0, 0, 8, 8]])],
                                                            labels=[torch.tensor([1])]))),
    ("channel:layer3:7", T.Channel("layer3", 7)),
    ("channel:layer1.0.relu:1:5", T.Channel("layer1.0.relu:1", 5)),  # C after the last colon
])
def test_every_target_form_has_one_reading(text, expected):
    assert _same_target(parse_target(text, names=["cat", "dog"]), expected), text


@pytest.mark.parametrize("text, expected", [
    ("sg:15", "unknown kind 'sg'"),
    ("3,x", "is not a target"),
    ("circle", "is not a target"),
    ("top0", "asks for no class"),
    ("seg:x", "needs a class index after seg:"),
    ("box:1,2,3", "needs four numbers X0,Y0,X1,Y1"),
    ("box:9,9,1,1", "X0 < X1 and Y0 < Y1"),
    ("box:0,0,8,8:hexagon", "neither an index nor a class name"),
    ("channel:layer3", "needs LAYER:C after channel:"),
    ("field:", "needs a field name"),
    ("field:aux:top3", "cannot explain 'top3' inside a field"),
    ("field:aux:3,4", "takes one class after field:NAME:"),
])
def test_bad_target_syntax_names_the_problem_and_every_form(text, expected):
    with pytest.raises(CliError) as error:
        parse_target(text, names=SHAPES_CLASSES)
    message = str(error.value)
    assert expected in message and "\n" not in message
    assert "seg:C" in message and "box:X0,Y0,X1,Y1[:LABEL]" in message  # the forms, the fix


@pytest.mark.parametrize("target, expected", [
    (["sg:15"], "unknown kind 'sg'"),  # syntax: see the test above
    (["channel:layer9:1"], "did you mean 'layer3'"),
    (["field:aux:3"], "the model's output has no field 'aux'"),
    (["top2", "3"], "topK stands alone"),
    (["top9"], "the K of --target top9 must be between 1 and 4"),
    (["seg:1"], "explains a segmentation output, but the model returns a tensor of shape"),
    (["box:0,0,8,8"], "explains a detection output"),
    (["channel:layer3:1", "channel:layer3:2", "channel:layer3:3"],
     "got 3 targets for 2 images"),
    (["channel:layer3:1", "3"], "must be of one kind for every image"),
])
def test_a_target_that_does_not_fit_is_one_line_and_status_2(tmp_path, capsys, shapes_files,
                                                             target, expected):
    status, _, err = _run(capsys, "attribute", *shapes_files[0], "--method", "saliency",
                          "--target", *target, "--device", "cpu", "-o", tmp_path)
    assert status == 2 and expected in _one_line_error(err)


@pytest.mark.slow  # five runs on the shapes model: about 5 s
def test_channel_top_k_and_per_image_targets_equal_the_python_api(tmp_path, capsys,
                                                                   shapes_files):
    paths, _ = shapes_files
    model = shapes_model()
    x = torch.cat([image.load(p, 64, mean=None, std=None) for p in paths])
    status, out, err = _run(capsys, "attribute", *paths, "--method", "saliency,gradcam",
                            "--target", "channel:layer3:5", "--device", "cpu", "-o",
                            tmp_path / "ch")
    assert status == 0, err
    for method in ("saliency", "gradcam"):
        expected = METHODS[method](model, x, T.Channel("layer3", 5))
        for i in range(2):
            saved = np.load(tmp_path / "ch" / f"shape{i}_{method}_channel-layer3-5.npy")
            np.testing.assert_allclose(saved, expected[i:i + 1].numpy(), rtol=1e-5, atol=1e-7)
    assert "maps for target(s) channel:layer3:5" in out
    # top2 is --top 2: the same files, bit for bit, and the Python API's TopK(2)
    assert _run(capsys, "attribute", *paths, "--method", "gradcam", "--target", "top2",
                "--quiet", "-o", tmp_path / "a")[0] == 0
    assert _run(capsys, "attribute", *paths, "--method", "gradcam", "--top", "2", "--quiet",
                "-o", tmp_path / "b")[0] == 0
    many = METHODS["gradcam"](model, x, T.TopK(2))
    top = model(x).topk(2, dim=-1).indices
    for i in range(2):
        for j in range(2):
            name = f"shape{i}_gradcam_{int(top[i, j])}.npy"
            a, b = np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
            assert np.array_equal(a, b)
            np.testing.assert_allclose(a, many[i:i + 1, j].numpy(), rtol=1e-5, atol=1e-6)
    # one target per image, of a structured kind: a channel each is refused, classes are fine
    status, _, err = _run(capsys, "attribute", *paths, "--target", "channel:layer3:1",
                          "channel:layer3:2", "-o", tmp_path / "c")
    assert status == 2 and "differ per image" in _one_line_error(err)


def _lraspp():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None,
                                            weights_backbone=None).eval()


@pytest.mark.slow  # a random-init LR-ASPP (MobileNetV3) at 64 px: about 6 s
def test_a_torchvision_segmentation_model_end_to_end(tmp_path, capsys, shapes_files):
    img = shapes_files[0][0]
    common = ["--model", "torchvision:lraspp_mobilenet_v3_large", "--size", 64, "--device",
              "cpu"]
    status, out, err = _run(capsys, "attribute", img, *common, "--method", "saliency,gradcam",
                            "--target", "seg:3", "field:out:seg:3", "-o", tmp_path / "a")
    assert status == 0, err
    model, x = _lraspp(), image.load(img, 64)
    for method in ("saliency", "gradcam"):
        expected = METHODS[method](model, x, T.Segmentation(3)).numpy()
        for tag in ("seg3", "out-seg3"):  # field:out reads the same dict entry
            saved = np.load(tmp_path / "a" / f"shape0_{method}_{tag}.npy")
            np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-7)
    assert out.startswith(f"{img}: pixels ")  # the summary: classes by share of the pixels
    # default target: the class covering most pixels, its predicted mask
    status, out, err = _run(capsys, "attribute", img, *common, "--method", "gradcam", "-o",
                            tmp_path / "b")
    assert status == 0, err
    with torch.no_grad():
        c = int(model(x)["out"].argmax(1).flatten().mode().values)
    saved = np.load(tmp_path / "b" / f"shape0_gradcam_seg{c}.npy")
    np.testing.assert_allclose(saved, METHODS["gradcam"](model, x, T.Segmentation(c)).numpy(),
                               rtol=1e-5, atol=1e-7)
    assert f"maps for target(s) seg:{c}" in out


def test_segmentation_and_detection_models_build_without_any_download(monkeypatch):
    from netlens._cli_io import load_model

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    for name, task in [("fcn_resnet50", "segmentation"),
                       ("fasterrcnn_mobilenet_v3_large_fpn", "detection")]:
        loaded = load_model(f"torchvision:{name}", torch.device("cpu"))
        assert loaded.task == task and not loaded.model.training
    assert loaded.mean is None  # a torchvision detector normalizes [0, 1] pixels itself
    with pytest.raises(CliError, match="refused the --model-arg options"):
        load_model("torchvision:resnet18", torch.device("cpu"), options={"min_size": 3})


_DETECTOR = ("--model", "torchvision:fasterrcnn_mobilenet_v3_large_fpn", "--size", 64,
             "--model-arg", "min_size=64", "--model-arg", "max_size=64", "--model-arg",
             "box_score_thresh=0.0", "--device", "cpu")


@pytest.mark.slow  # a random-init Faster R-CNN (MobileNetV3 FPN) at 64 px: about 8 s
def test_a_torchvision_detection_model_end_to_end(tmp_path, capsys, shapes_files):
    img = shapes_files[0][0]
    # random init scores every box about 1/91, under the default threshold 0.05 (without the
    # option: "predicts no box ... --model-arg box_score_thresh=0.0", see the test below)
    detector = _DETECTOR
    status, out, err = _run(capsys, "attribute", img, *detector, "--method", "saliency,gradcam",
                            "-o", tmp_path / "a")
    assert status == 0, err
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.get_model(
            "fasterrcnn_mobilenet_v3_large_fpn", weights=None, weights_backbone=None,
            min_size=64, max_size=64, box_score_thresh=0.0).eval()
    x = image.load(img, 64, mean=None, std=None)  # detectors normalize themselves
    with torch.no_grad():
        pred = model(x)[0]
    first = torch.sort(pred["scores"], descending=True, stable=True).indices[0]
    box, label = pred["boxes"][first:first + 1], pred["labels"][first:first + 1]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    (layer,) = manifest["params"]["layers"]
    assert layer.startswith("backbone.")  # not the ROI pooling, one map per proposal
    target = T.Detection([box], labels=[label])
    for method, options in (("saliency", {}), ("gradcam", {"layer": layer})):
        saved = np.load(tmp_path / "a" / f"shape0_{method}_box0.npy")
        expected = METHODS[method](model, x, target, **options).numpy()
        assert saved.shape == (1, 3 if METHODS[method].output == "input" else 1, 64, 64)
        np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-12)
    assert f"{img}: {pred['boxes'].shape[0]} boxes (" in out and " at [" in out
    # an explicit box (a predicted one, rounded) with its label
    b = [round(float(v)) for v in box[0]]
    spec = "box:" + ",".join(map(str, b)) + f":{int(label)}"
    status, out, err = _run(capsys, "attribute", img, *detector, "--method", "saliency",
                            "--target", spec, "-o", tmp_path / "b")
    assert status == 0, err
    expected = METHODS["saliency"](model, x, T.Detection([torch.tensor([b], dtype=torch.float)],
                                                         labels=[label])).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "b" / "shape0_saliency_box0.npy"), expected,
                               rtol=1e-5, atol=1e-12)
    assert f"maps for target(s) {spec}" in out


def test_defaults_and_summaries_for_each_kind_of_output():
    def name(c, classes):
        return f"c{c}"

    none = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.long)}]
    with pytest.raises(CliError, match="predicts no box in image 0.*box_score_thresh"):
        target_columns(None, None, none, 1, class_name=name)
    boxes = [{"boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 9, 9]]),
              "scores": torch.tensor([0.4, 0.9]), "labels": torch.tensor([2, 5])}]
    (column,) = target_columns(None, None, boxes, 1, class_name=name)
    assert column.specs == ["box:1.0,1.0,9.0,9.0:5"] and column.classes == ["c5"]
    assert predictions(boxes, 0, name) == "2 boxes (c5 0.90 at [1, 1, 9, 9], c2 0.40 at " \
                                          "[0, 0, 4, 4])"
    pixel_classes = torch.tensor([[[0, 0, 0, 0, 2, 2, 2, 1]]])  # (1, 1, 8)
    dense = torch.nn.functional.one_hot(pixel_classes, 3).permute(0, 3, 1, 2).float()
    assert predictions({"out": dense}, 0, name) == "pixels c0 0.50, c2 0.38, c1 0.12"
    (column,) = target_columns(None, None, {"out": dense}, 1, class_name=name,
                               names=["__background__", "cat", "dog"])
    assert column.tags == ["seg2"]  # the most pixels, not counting the background
    assert predictions(torch.tensor([[0.0, 2.0]]), 0, name).startswith("c1 0.88, c0 0.12")


def _tiny_vit(folder: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = dict(enumerate(["cat", "dog", "fox", "owl", "yak"]))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ViTForImageClassification(ViTConfig(
            image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32,
            num_attention_heads=2, intermediate_size=64, num_labels=5, id2label=labels,
            label2id={v: k for k, v in labels.items()}))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
                      image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)


@pytest.mark.slow  # importing transformers takes seconds
def test_a_huggingface_model_from_a_local_folder(tmp_path, capsys, shapes_files):
    from transformers import AutoModelForImageClassification

    _tiny_vit(tmp_path / "vit")
    img = shapes_files[0][0]
    status, out, err = _run(capsys, "attribute", img, "--model", f"hf:{tmp_path / 'vit'}",
                            "--method", "saliency,gradcam", "--target", 3, "--device", "cpu",
                            "-o", tmp_path / "out")
    assert status == 0, err
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "vit").eval()
    x = image.load(img, 32, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])  # the processor's
    for method in ("saliency", "gradcam"):
        saved = np.load(tmp_path / "out" / f"shape0_{method}_3.npy")
        np.testing.assert_allclose(saved, METHODS[method](model, x, 3).numpy(), rtol=1e-5,
                                   atol=1e-7)
    raw = [f for f in json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]
           if f["kind"] == "array"]
    assert {f["class"] for f in raw} == {"owl"}  # config.id2label
    assert any(f" {name} 0." in out for name in ("cat", "dog", "fox", "owl", "yak"))
    capsys.readouterr()  # the progress bar of from_pretrained above
    status, _, err = _run(capsys, "attribute", img, "--model", f"hf:{tmp_path / 'out'}", "-o",
                          tmp_path / "bad")
    assert status == 2 and "could not load the HuggingFace image classifier" in \
        _one_line_error(err)


@pytest.mark.slow  # importing timm takes seconds
def test_a_timm_model(tmp_path, capsys, shapes_files):
    import timm

    img = shapes_files[0][0]
    status, _, err = _run(capsys, "attribute", img, "--model", "timm:resnet18", "--size", 32,
                          "--method", "saliency,gradcam", "--target", 3, "--device", "cpu",
                          "-o", tmp_path)
    assert status == 0 and "random weights" in err, err
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model("resnet18", pretrained=False).eval()
    x = image.load(img, 32)  # timm's resnet18: ImageNet statistics
    for method in ("saliency", "gradcam"):
        saved = np.load(tmp_path / f"shape0_{method}_3.npy")
        np.testing.assert_allclose(saved, METHODS[method](model, x, 3).numpy(), rtol=1e-5,
                                   atol=1e-7)
    status, _, err = _run(capsys, "attribute", img, "--model", "timm:resnet19", "-o", tmp_path)
    assert status == 2 and "did you mean resnet18" in _one_line_error(err)
    status, _, err = _run(capsys, "attribute", img, "--model", "timm:resnet18", "--weights",
                          "IMAGENET", "-o", tmp_path)
    assert status == 2 and "--weights DEFAULT" in _one_line_error(err)


@pytest.mark.parametrize("spec, package", [("hf:google/vit-base-patch16-224", "transformers"),
                                           ("timm:resnet18", "timm")])
def test_a_missing_package_is_one_line_naming_pip(monkeypatch, tmp_path, capsys, shapes_files,
                                                  spec, package):
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError
    status, _, err = _run(capsys, "attribute", shapes_files[0][0], "--model", spec, "-o",
                          tmp_path)
    assert status == 2 and f"pip install {package}" in _one_line_error(err)


def test_ctrl_c_while_netlens_is_imported_is_one_line_and_status_130(monkeypatch, capsys):
    """The console script (``_netlens_cli.main``) turns a Ctrl-C during ``import netlens.cli``
    (torch's import, about a second) into one line and status 130, not a traceback."""
    import builtins

    import _netlens_cli

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "netlens.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert _netlens_cli.main() == 130
    err = capsys.readouterr().err
    assert err == "netlens: error: interrupted; no files written\n"
    monkeypatch.setattr(builtins, "__import__", real_import)
    monkeypatch.setattr("sys.argv", ["netlens", "--version"])
    assert _netlens_cli.main() == 0  # otherwise it is netlens.cli.main
    assert capsys.readouterr().out.startswith("netlens ")


def test_a_one_channel_model_gets_grayscale_images(tmp_path, capsys, shapes_files):
    torch.manual_seed(0)
    mnist = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    path = tmp_path / "mnist.pt"
    torch.save(mnist, path)
    img = shapes_files[0][0]
    status, _, err = _run(capsys, "attribute", img, "--model", path, "--method", "saliency",
                          "--size", 28, "--device", "cpu", "-o", tmp_path / "out")
    assert status == 0, err
    saved = np.load(tmp_path / "out" / next(p.name for p in (tmp_path / "out").glob("*.npy")))
    x = image.load(img, 28, mean=None, std=None, channels=1)
    want = METHODS["saliency"](mnist, x, None).numpy()
    assert saved.shape == (1, 1, 28, 28)
    np.testing.assert_allclose(saved, want, rtol=1e-5, atol=1e-7)
    status, _, err = _run(capsys, "dream", img, "--model", path, "--layer", "1", "--steps", 1,
                          "--octaves", 1, "--device", "cpu", "-o", tmp_path / "dream")
    assert status == 0, err
