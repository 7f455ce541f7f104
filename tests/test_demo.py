"""Built-in demo data: determinism, ventricle enlargement, label set, anatomy, tumours, files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from shared.conditioning.features import measure_ventricles
from shared.demo.anatomy import generate_label_map
from shared.demo.dataset import TUMOUR_MASK_LABELS, write_brain_dataset, write_tumour_dataset
from shared.demo.grid import make_grid
from shared.demo.tumour import generate_tumour_case
from shared.io import InputError, load_image, load_label_map, read_datalist, read_json
from shared.labels import CSF_LABEL_ID, SYNTHSEG_LABEL_IDS, parenchyma_mask, ventricle_mask

SMALL = make_grid((48, 48, 48), 4.0)


def test_same_seed_gives_byte_identical_arrays_and_another_seed_does_not(tmp_path):
    first = write_brain_dataset(tmp_path / "a", n_cases=2, shape=(32, 32, 32), seed=7)
    second = write_brain_dataset(tmp_path / "b", n_cases=2, shape=(32, 32, 32), seed=7)
    other = write_brain_dataset(tmp_path / "c", n_cases=2, shape=(32, 32, 32), seed=8)
    for a, b, c in zip(read_datalist(first), read_datalist(second), read_datalist(other)):
        for key, loader in (("image", load_image), ("label", load_label_map)):
            array_a, array_b = loader(a[key]).array, loader(b[key]).array
            assert array_a.tobytes() == array_b.tobytes()
            assert not np.array_equal(array_a, loader(c[key]).array)


def test_tumour_cases_are_deterministic_too():
    one, two = generate_tumour_case(SMALL, 3, 1), generate_tumour_case(SMALL, 3, 1)
    assert one.image.tobytes() == two.image.tobytes() and one.mask.tobytes() == two.mask.tobytes()


@pytest.mark.parametrize("index", [0, 1])
def test_larger_enlargement_gives_strictly_larger_ventricle_ratio(index):
    ratios = []
    for enlargement in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0):
        labels, draws = generate_label_map(SMALL, seed=0, index=index, enlargement=enlargement)
        assert draws.enlargement == enlargement
        ratios.append(measure_ventricles(labels, SMALL.affine).ratio)
    assert all(b > a for a, b in zip(ratios, ratios[1:])), ratios
    assert ratios[-1] / ratios[0] > 3.0  # normal -> hydrocephalus-like


def test_overriding_the_enlargement_keeps_the_head_and_grows_the_ventricles():
    normal, _ = generate_label_map(SMALL, seed=0, index=0, enlargement=1.0)
    large, _ = generate_label_map(SMALL, seed=0, index=0, enlargement=4.0)
    assert np.array_equal(normal > 0, large > 0)  # same head, same ICV
    assert np.count_nonzero(ventricle_mask(large)) > np.count_nonzero(ventricle_mask(normal))


@pytest.mark.parametrize(
    "shape, spacing",
    [
        ((64, 64, 64), None),
        ((32, 32, 32), None),
        ((96, 112, 96), (1.667, 1.75, 1.667)),
        ((40, 48, 24), (4.0, 4.0, 8.0)),
    ],
)
def test_label_set_is_exactly_the_declared_one(shape, spacing):
    grid = make_grid(shape, spacing)
    for index in range(2 if shape[0] < 96 else 1):
        labels, _ = generate_label_map(grid, seed=11, index=index)
        assert sorted(np.unique(labels).tolist()) == sorted(SYNTHSEG_LABEL_IDS)


def test_anatomy_is_plausible():
    grid = make_grid((64, 64, 64))
    labels, _ = generate_label_map(grid, seed=0, index=4, enlargement=5.0)
    x = np.indices(labels.shape)[0]
    # Two hemispheres: left (x < centre in RAS) labels sit left of their right counterparts.
    for left_id, right_id in ((2, 41), (3, 42), (4, 43), (10, 49)):
        assert x[labels == left_id].mean() < x[labels == right_id].mean()
    # Even enlarged, ventricles stay inside the brain: never next to background or the outer CSF.
    near_ventricles = ndimage.binary_dilation(ventricle_mask(labels), iterations=2)
    assert not np.any(near_ventricles & (labels == 0))
    outer = (labels == CSF_LABEL_ID) & ~ndimage.binary_erosion(labels > 0, iterations=3)
    assert not np.any(near_ventricles & outer)
    # Lateral ventricles are surrounded mostly by white matter and deep grey nuclei.
    shell = ndimage.binary_dilation(np.isin(labels, (4, 43))) & ~ventricle_mask(labels)
    assert np.isin(labels[shell], (2, 41, 10, 49, 11, 50, 12, 51, 13, 52)).mean() > 0.8


def test_flair_contrast_has_dark_fluid_and_bright_grey_matter(tmp_path):
    datalist = write_brain_dataset(tmp_path, n_cases=1, shape=(64, 64, 64))
    item = read_datalist(datalist)[0]
    image, labels = load_image(item["image"]).array, load_label_map(item["label"]).array
    mean = {
        name: image[np.isin(labels, ids)].mean()
        for name, ids in {"ventricles": (4, 43), "wm": (2, 41), "cortex": (3, 42), "background": (0,)}.items()
    }
    assert mean["background"] < mean["ventricles"] < mean["wm"] < mean["cortex"]


def test_every_tumour_mask_is_non_empty_and_inside_the_brain():
    for index in range(8):
        case = generate_tumour_case(SMALL, seed=2, index=index)
        assert case.mask.dtype == np.uint8 and set(np.unique(case.mask)) <= {0, 1}
        assert case.mask.sum() > 0
        assert np.all(parenchyma_mask(case.labels)[case.mask > 0])
        # hyperintense: the tumour is brighter than the rest of the brain
        assert case.image[case.mask > 0].mean() > case.image[(case.labels > 0) & (case.mask == 0)].mean()


def test_tumour_size_and_position_are_controllable():
    small = generate_tumour_case(SMALL, seed=0, index=0, radius_range_mm=(6.0, 6.0), centre_fraction=(0.35, 0.5, 0.6))
    large = generate_tumour_case(SMALL, seed=0, index=0, radius_range_mm=(20.0, 20.0), centre_fraction=(0.35, 0.5, 0.6))
    assert small.radius_mm == 6.0 and large.radius_mm == 20.0
    assert large.mask.sum() > 5 * small.mask.sum()
    assert small.centre_voxel == large.centre_voxel == tuple(np.round(np.array([0.35, 0.5, 0.6]) * 47).astype(int))
    assert small.mask[small.centre_voxel] == 1


def test_bad_tumour_requests_fail_clearly():
    with pytest.raises(InputError, match="not in cerebral white matter"):
        generate_tumour_case(SMALL, seed=0, index=0, centre_fraction=(0.01, 0.01, 0.01))
    with pytest.raises(InputError, match="tumour radius range"):
        generate_tumour_case(SMALL, seed=0, index=0, radius_range_mm=(10.0, 5.0))
    with pytest.raises(InputError, match="grid shape"):
        make_grid((8, 64, 64))
    with pytest.raises(InputError, match="grid spacing"):
        make_grid((32, 32, 32), (1.0, -1.0, 1.0))


def test_brain_dataset_files_datalist_and_mosaic(tmp_path):
    datalist = write_brain_dataset(tmp_path, n_cases=5, shape=(40, 40, 40), seed=1, validation_fraction=0.2)
    content = read_json(datalist)
    assert [len(content["training"]), len(content["validation"])] == [4, 1]
    assert content["training"][0]["image"] == "images/brain_000.nii.gz"
    assert 1.0 <= content["training"][0]["enlargement"] <= 5.0
    info = read_json(tmp_path / "dataset.json")
    assert sorted(int(k) for k in info["labels"]) == sorted(SYNTHSEG_LABEL_IDS)
    item = read_datalist(datalist)[0]
    image, labels = load_image(item["image"]), load_label_map(item["label"], allowed_labels=SYNTHSEG_LABEL_IDS)
    np.testing.assert_allclose(image.affine, labels.affine)
    assert image.spacing == pytest.approx((4.8, 4.8, 4.8))
    assert (tmp_path / "mosaic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_tumour_dataset_on_the_brats_grid(tmp_path):
    datalist = write_tumour_dataset(tmp_path, n_cases=1, shape=(192, 192, 96), validation_fraction=0.0)
    item = read_datalist(datalist)[0]
    mask = load_label_map(item["label"], allowed_labels=TUMOUR_MASK_LABELS)
    assert mask.array.shape == (192, 192, 96) and mask.array.sum() == item["tumour_voxels"] > 0
    assert (tmp_path / "mosaic.png").is_file()


def test_monai_reads_the_datalist(tmp_path):
    from monai.data import load_decathlon_datalist

    datalist = write_tumour_dataset(tmp_path, n_cases=3, shape=(32, 32, 32))
    items = load_decathlon_datalist(str(datalist), data_list_key="training")
    assert [i["image"] for i in items] == [i["image"] for i in read_datalist(datalist, ["training"])]


def test_rewriting_a_dataset_removes_cases_of_an_earlier_larger_run(tmp_path):
    write_brain_dataset(tmp_path, n_cases=4, shape=(32, 32, 32))
    write_brain_dataset(tmp_path, n_cases=2, shape=(32, 32, 32))
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["brain_000.nii.gz", "brain_001.nii.gz"]
    assert len(read_datalist(tmp_path / "datalist.json")) == 2


def test_stage_runner_forgets_a_stage_while_it_reruns(tmp_path):
    from shared.workflow.pipeline import StageRunner

    runner = StageRunner(tmp_path)
    runner.run("stage", {"n": 1}, lambda: None)
    assert runner.is_done("stage", {"n": 1})

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run("stage", {"n": 2}, interrupted)
    assert not runner.is_done("stage", {"n": 1}) and not runner.is_done("stage", {"n": 2})
    assert [name for name, _ in runner.finished()] == []

    runner.run("first", {}, lambda: None)
    runner.run("second", {}, lambda: None)
    (tmp_path / ".stages" / "broken.json").write_text("{not json")
    assert [name for name, _ in runner.finished()] == ["first", "second"]


def test_ctrl_c_in_a_command_prints_one_line_and_exits_130(capsys):
    from shared.cli.runner import run_cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        run_cli(interrupted)
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip() == (
        "interrupted: finished outputs are kept; run the same command again to go on"
    )
