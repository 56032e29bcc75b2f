"""The command lines, run in-process: the product's (``python -m dragon_core``: edit, invert) and
the lab's (``python -m dragon_lab``: scene, sample, demo, bench, edit with its cost)."""

import json

import numpy as np
import pytest

from dragon_demo import shapes_world as sw
from dragon_lab import edit_cases as ec
from dragon_core.cli import main
from dragon_lab.cli import main as lab
from dragon_core.images import load_mask, load_png, save_png

pytest.importorskip("diffusers")


@pytest.mark.parametrize("edit", [None, *ec.EDIT_KINDS])
def test_scene_writes_images_masks_json_and_ground_truth(tmp_path, capsys, edit):
    args = ["scene", "--seed", "5", "--out", str(tmp_path)] + (["--edit", edit] if edit else [])
    assert lab(args) == 0
    info = json.loads((tmp_path / "scene.json").read_text())
    scene = sw.Scene.from_dict(info["scene"])
    assert np.abs(load_png(tmp_path / "image.png") - scene.render()).max() <= 0.5 / 255 + 1e-6
    for i, m in enumerate(scene.masks()):
        assert np.array_equal(load_mask(tmp_path / f"mask_{i}.png"), m)
    if edit is None:
        assert not (tmp_path / "target.png").exists()
        return
    target = sw.Scene.from_dict(info["target"])
    assert info["edit"]["kind"] == edit
    assert np.abs(load_png(tmp_path / "target.png") - target.render()).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(load_mask(tmp_path / "target_mask.png"), target.masks()[info["edit"]["object"]])
    assert (tmp_path / "reference.png").exists() == (edit in ("appearance", "paste"))
    assert (tmp_path / "source_mask.png").exists() == (edit != "paste")
    assert "wrote" in capsys.readouterr().out


def test_scene_with_explicit_move(tmp_path):
    assert lab(["scene", "--seed", "1", "--out", str(tmp_path), "--edit", "move", "--object", "0",
                 "--dx", "2", "--dy", "-1"]) == 0
    info = json.loads((tmp_path / "scene.json").read_text())
    assert info["edit"]["dx"] == 2 and info["edit"]["dy"] == -1
    src = load_mask(tmp_path / "mask_0.png")
    tgt = load_mask(tmp_path / "target_mask.png")
    assert src.sum() > 0 and tgt.sum() > 0


def test_sample_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert lab(["sample", "--prompt", "flat, red disc", "--n", "2", "--steps", "5", "--out", str(out)]) == 0
    assert load_png(out).shape == (32, 65, 3)
    assert "cfg 3.0, comfy_uniform" in capsys.readouterr().out


def test_invert_reports_psnr_and_writes_trajectory(tmp_path, capsys):
    scene = sw.random_scene(7)
    save_png(scene.render(), tmp_path / "in.png")
    assert main(["invert", "--image", str(tmp_path / "in.png"), "--prompt", scene.prompt(), "--steps", "20",
                 "--out", str(tmp_path / "inv")]) == 0
    out = capsys.readouterr().out
    psnr = float(out.split("PSNR: ")[1].split(" dB")[0])
    assert psnr > 28
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "inv" / "trajectory.safetensors"))
    assert t["latents"].shape == (21, 1, 3, 32, 32)


def test_demo_writes_images(tmp_path, capsys):
    assert lab(["demo", "--out", str(tmp_path), "--steps", "10"]) == 0
    out = capsys.readouterr().out
    for kind in ("move", "resize", "drag", "points", "appearance", "paste"):
        assert f"\n{kind}" in "\n" + out or out.startswith(kind), kind
    assert out.count("PSNR to target") == 6 and "object IoU" in out
    for name in ("edits.png", "samples.png", "reconstruction.png"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out


@pytest.mark.parametrize("argv,message", [
    (["sample", "--prompt", "red banana", "--out", "x.png", "--steps", "2"], "unknown word 'banana'"),
    (["invert", "--image", "/nonexistent.png", "--out", "x"], "image file not found"),
    (["sample", "--prompt", "flat", "--out", "x.png", "--steps", "0"], "steps must be an integer"),
    (["sample", "--prompt", "flat", "--out", "x.png", "--model", "/nonexistent"], "no config.json"),
])
def test_bad_input_gives_a_clear_error(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert (lab if argv[0] == "sample" else main)(argv) == 2
    assert message in capsys.readouterr().err


def test_invert_refuses_a_wrong_size_image(tmp_path, capsys):
    save_png(np.zeros((40, 40, 3), np.float32), tmp_path / "big.png")
    assert main(["invert", "--image", str(tmp_path / "big.png"), "--out", str(tmp_path / "o")]) == 2
    assert "40x40 pixels; this model works at 32x32" in capsys.readouterr().err


def test_diffusers_unet_folder_as_model(tmp_path, random_unet):
    random_unet.save_pretrained(tmp_path / "unet")
    assert lab(["sample", "--prompt", "flat", "--steps", "2", "--model", str(tmp_path / "unet"),
                 "--out", str(tmp_path / "r.png")]) == 0
    assert load_png(tmp_path / "r.png").shape == (32, 32, 3)


def test_edit_move_from_png_files(tmp_path, capsys):
    case = ec.random_edit_case(1001, "move")
    save_png(case.scene.render(), tmp_path / "img.png")
    save_png(case.scene.masks()[case.index].astype(np.float32)[..., None].repeat(3, 2), tmp_path / "mask.png")
    assert main(["edit", "move", "--image", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"),
                 "--dx", str(case.dx), "--dy", str(case.dy), "--prompt", case.scene.prompt(), "--steps", "10",
                 "--out", str(tmp_path / "out")]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    from dragon_core.settings import default_settings
    from dragon_demo.shapes_model import load_config

    settings = default_settings("move", load_config()["edit_defaults"])
    assert stats["guided_steps"] == sum(settings.guided(s, 10) for s in range(10)) > 0
    assert stats["memory_bytes"] > 0
    assert load_png(tmp_path / "out" / "result.png").shape == (32, 32, 3)
    assert "move edit in" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["edit", "move", "--dx", "3"], "move needs --mask"),
    (["edit", "move", "--mask", "empty.png", "--dx", "3"], "mask is empty"),
    (["edit", "move", "--mask", "m.png", "--dx", "40"], "would leave the image entirely"),
    (["edit", "move", "--mask", "big.png", "--dx", "3"], "--mask big.png is 40x40 pixels, the image is 32x32"),
    (["edit", "drag"], "drag needs --points"),
    (["edit", "drag", "--points", "1,2,3"], "has 3 numbers, expected 4"),
    (["edit", "drag", "--points", "1,2,3,x"], "is not a number"),
    (["edit", "drag", "--points", "1,2,40,3"], r"targets\[0\] = \(40, 3\) is outside the 32x32 image"),
    (["edit", "appearance", "--mask", "m.png"], "needs --reference IMAGE and --reference-mask"),
])
def test_edit_errors_are_one_clear_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    save_png(sw.random_scene(0).render(), tmp_path / "img.png")
    m = np.zeros((32, 32, 3), np.float32)
    m[10:14, 10:14] = 1
    save_png(m, tmp_path / "m.png")
    save_png(np.zeros((32, 32, 3), np.float32), tmp_path / "empty.png")
    save_png(np.ones((40, 40, 3), np.float32), tmp_path / "big.png")
    assert main(argv + ["--image", "img.png", "--out", "o", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert message.replace("\\", "") in err.replace("\\", "") or __import__("re").search(message, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_edit_preset_paper_takes_the_papers_settings_not_the_models(tmp_path, capsys):
    """--preset paper: the official demo's settings (CFG 4, energy 40, SDE, 3 time-travel passes) even
    on the shapes model, whose calibrated settings the default preset (model) uses."""
    from dragon_core.settings import default_settings
    from dragon_demo.shapes_model import load_config

    case = ec.random_edit_case(1001, "move")
    save_png(case.scene.render(), tmp_path / "img.png")
    save_png(case.scene.masks()[case.index].astype(np.float32)[..., None].repeat(3, 2), tmp_path / "mask.png")
    argv = ["edit", "move", "--image", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"),
            "--dx", str(case.dx), "--dy", str(case.dy), "--steps", "20"]
    for preset, line in (("paper", "preset paper: cfg 4, energy_scale 40, guidance_end 0.6, flexibility 0.4, "
                                   "time_travel 3,"),
                         ("model", "preset model: cfg 1, energy_scale 240, guidance_end 1, flexibility 0.7, "
                                   "time_travel 1,")):
        out = tmp_path / preset
        assert main(argv + ["--preset", preset, "--out", str(out)]) == 0
        assert line in capsys.readouterr().out
        settings = default_settings("move", load_config()["edit_defaults"], preset=preset)
        stats = json.loads((out / "stats.json").read_text())
        assert stats["guided_steps"] == sum(settings.repeats(s, 20) for s in range(20) if settings.guided(s, 20))
        assert stats["renoise"] == (2 if preset == "paper" else 0)  # time travel on step 10 of 20: 2 more passes
    assert not np.array_equal(load_png(tmp_path / "paper" / "result.png"), load_png(tmp_path / "model" / "result.png"))
    assert main(argv + ["--preset", "paper", "--cfg", "2", "--out", str(tmp_path / "o")]) == 0
    assert "preset paper: cfg 2, energy_scale 40" in capsys.readouterr().out  # an explicit value wins
    with pytest.raises(SystemExit):
        main(argv + ["--preset", "official", "--out", str(tmp_path / "o")])
    assert "invalid choice: 'official' (choose from 'model', 'paper')" in capsys.readouterr().err
    from dragon_lab.cli import build_parser

    assert [build_parser().parse_args(c + ["--preset", "paper"]).preset for c in (["bench"], ["demo"])] == ["paper"] * 2


def test_bench_quick_scores_against_ground_truth(tmp_path):
    from dragon_lab.bench import format_table, make_case, naive, run_bench, score
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_demo.shapes_model import load_config

    case = make_case("move", 0).edit_case
    perfect = score("move", case, case.target.render())
    assert perfect["iou"] == 1.0 and perfect["centroid_err"] < 1e-6 and perfect["psnr"] == 99.0
    assert perfect["vacated"] == 1.0
    assert score("move", case, case.scene.render())["iou"] < perfect["iou"]
    assert naive(case).shape == (32, 32, 3)
    backend, enc = load_shapes_backend()
    r = run_bench(backend, enc, quick=True, defaults=load_config().get("edit_defaults"), kinds=("move",), n=1,
                  steps=10, sheet=tmp_path / "s.png", json_path=tmp_path / "b.json")
    assert set(r["table"]["move"]) >= {"dragon", "no_guidance", "naive"}
    saved = json.loads((tmp_path / "b.json").read_text())["table"]["move"]
    assert set(saved["dragon"]["iou"]) == {"mean", "median", "worst", "n"} and saved["dragon"]["iou"]["n"] == 1
    assert saved["cases"][0]["scores"]["dragon"]["iou"] == saved["dragon"]["iou"]["worst"]
    assert (tmp_path / "s.png").is_file() and "| move | iou |" in format_table(r)


def test_bench_cases_are_fixed_per_kind(monkeypatch):
    """A kind's cases depend on its name and index only, not on the list of kinds."""
    import dragon_lab.bench as b

    before = {k: b.make_case(k, 1).edit_case for k in b.KINDS}
    monkeypatch.setattr(b, "KINDS", tuple(reversed(b.KINDS)))
    for k, case in before.items():
        assert b.make_case(k, 1).edit_case == case
    assert before["move"] != b.make_case("move", 2).edit_case


def test_the_product_command_line_has_edit_and_invert_only(capsys):
    with pytest.raises(SystemExit):
        main(["bench"])
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def test_lab_edit_measures_the_product_edit(tmp_path, capsys):
    """``python -m dragon_lab edit --stats``: the same edit as ``dragon_core edit``, with its cost."""
    case = ec.random_edit_case(1001, "move")
    save_png(case.scene.render(), tmp_path / "img.png")
    save_png(case.scene.masks()[case.index].astype(np.float32)[..., None].repeat(3, 2), tmp_path / "mask.png")
    argv = ["edit", "move", "--image", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"),
            "--dx", str(case.dx), "--dy", str(case.dy), "--prompt", case.scene.prompt(), "--steps", "6"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert lab(argv + ["--out", str(tmp_path / "b"), "--stats"]) == 0
    assert np.array_equal(load_png(tmp_path / "a" / "result.png"), load_png(tmp_path / "b" / "result.png"))
    stats = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert stats["forward_grad"] == stats["guided_steps"] > 0 and stats["forward_equiv"] > 0
    assert "forward-equivalents" in capsys.readouterr().out


def test_a_file_that_is_not_an_image_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.png").write_text("not a picture")
    save_png(sw.random_scene(0).render(), tmp_path / "img.png")
    assert main(["edit", "move", "--image", "notes.png", "--mask", "notes.png", "--dx", "3", "--out", "o",
                 "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "--image: notes.png is not an image file Pillow can read" in err and len(err.strip().splitlines()) == 1
    assert main(["edit", "move", "--image", "img.png", "--mask", "notes.png", "--dx", "3", "--out", "o",
                 "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "--mask: notes.png is not an image file" in err and "Traceback" not in err


def test_edit_warns_about_a_far_too_strong_energy_and_prints_the_values_used(tmp_path, capsys):
    case = ec.random_edit_case(1001, "move")
    save_png(case.scene.render(), tmp_path / "img.png")
    save_png(case.scene.masks()[case.index].astype(np.float32)[..., None].repeat(3, 2), tmp_path / "mask.png")
    argv = ["edit", "move", "--image", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"),
            "--dx", str(case.dx), "--dy", str(case.dy), "--steps", "7", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and "energy_scale 240, guidance_end 1" in out.out
    assert "cross_attention on (steps 5-6)" in out.out
    assert main(argv + ["--steps", "3"]) == 0  # the attention's first step is past the run's end: said, not hidden
    out = capsys.readouterr()
    assert "warning: --steps 3: cross-branch attention starts at step 5, so it never reads the memory" in out.err
    assert "cross_attention on but never active" in out.out
    assert main(argv + ["--energy-scale", "5000"]) == 0
    out = capsys.readouterr()
    assert "warning: --energy-scale 5000 is 21x this edit's default (240)" in out.err and "noise" in out.err
    assert "energy_scale 5000" in out.out
