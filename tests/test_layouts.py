"""The layouts researchers have (BraTS, FreeSurfer, SynthSeg, datalist, table): found, and read
onto a working grid at their true place in scanner space."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from conftest import run_script, save_nifti
from shared.datasets.label_rules import AnatomyLabels, WholeTumour
from shared.datasets.layouts import CaseFiles, detect_layout, find_cases
from shared.datasets.reading import WorkingGrid, read_case
from shared.datasets.working_set import write_working_set
from shared.demo.dataset import write_brain_dataset, write_tumour_dataset
from shared.demo.layouts import (
    BRATS_SHAPE,
    CONFORMED_SHAPE,
    write_brats_layout,
    write_freesurfer_layout,
    write_synthseg_layout,
)
from shared.io import InputError, load_volume, read_datalist
from shared.labels import SYNTHSEG_LABEL_IDS, ventricle_mask

BRAIN_GRID = WorkingGrid((32, 32, 32), (6.0, 6.0, 6.0))
TUMOUR_GRID = WorkingGrid((64, 64, 64), (3.0, 3.0, 3.0))


@pytest.fixture(scope="module")
def demo_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    brains = write_brain_dataset(root / "brains", n_cases=2, shape=(32, 32, 32), validation_fraction=0.0)
    tumours = write_tumour_dataset(root / "tumours", n_cases=2, shape=(64, 64, 64), validation_fraction=0.0)
    return {
        "root": root,
        "brains": brains,
        "tumours": tumours,
        "brats": write_brats_layout(tumours, root / "brats2021", edition=2021),
        "brats2023": write_brats_layout(tumours, root / "brats2023", edition=2023),
        "freesurfer": write_freesurfer_layout(brains, root / "subjects"),
        "synthseg": write_synthseg_layout(brains, root / "synthseg"),
    }


def as_datalist(cases, path):
    """The same files as a datalist (absolute paths), the form every layout must agree with."""
    items = [{"image": str(c.image), "label": str(c.label), "case": c.case, "subject": c.subject} for c in cases]
    path.write_text(json.dumps({"training": items}))
    return path


def world_centroid(mask, affine):
    return (affine @ np.append(np.argwhere(mask).mean(axis=0), 1.0))[:3]


def voxel_ml(affine):
    return abs(np.linalg.det(affine[:3, :3])) / 1000.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout, names, subjects",
    [
        ("brats", ["BraTS2021_00000", "BraTS2021_00001"], ["BraTS2021_00000", "BraTS2021_00001"]),
        ("brats2023", ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"], ["BraTS-GLI-00000", "BraTS-GLI-00001"]),
        ("freesurfer", ["sub-000", "sub-001"], ["sub-000", "sub-001"]),
        ("synthseg", ["sub-000", "sub-001"], ["sub-000", "sub-001"]),
    ],
)
def test_each_layout_is_found_with_real_naming_and_reads_like_its_datalist(
    demo_sets, tmp_path, layout, names, subjects
):
    found = find_cases(demo_sets[layout])
    assert found.layout == layout.removesuffix("2023")
    assert [c.case for c in found.cases] == names and [c.subject for c in found.cases] == subjects
    listed = find_cases(as_datalist(found.cases, tmp_path / "datalist.json"))
    assert listed.layout == "datalist" and listed.cases == found.cases
    tumours = layout.startswith("brats")
    rule, grid, foreground = (
        (WholeTumour(), TUMOUR_GRID, "image") if tumours else (AnatomyLabels(), BRAIN_GRID, "label")
    )
    for case, again in zip(found.cases, listed.cases):
        direct, via_list = read_case(case, grid, rule, foreground), read_case(again, grid, rule, foreground)
        assert direct.image.shape == direct.label.shape == grid.shape
        np.testing.assert_array_equal(direct.image, via_list.image)
        np.testing.assert_array_equal(direct.label, via_list.label)
        np.testing.assert_array_equal(direct.affine, via_list.affine)


@pytest.mark.slow
def test_brats_files_have_brats_grid_and_ids_and_read_back_to_the_demo_tumour(demo_sets):
    case = find_cases(demo_sets["brats"]).cases[0]
    seg = load_volume(case.label)
    assert seg.array.shape == BRATS_SHAPE and seg.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert set(np.unique(seg.array)) == {0, 1, 2, 4}
    assert nib.aff2axcodes(seg.affine) == ("L", "P", "S")  # stored LPS: the reader must turn it to RAS
    arrays = read_case(case, TUMOUR_GRID, WholeTumour(), "image")
    assert nib.aff2axcodes(arrays.affine) == ("R", "A", "S")
    original = load_volume(read_datalist(demo_sets["tumours"])[0]["label"])
    read_ml = arrays.label.sum() * voxel_ml(arrays.affine)
    original_ml = original.array.sum() * voxel_ml(original.affine)
    assert read_ml == pytest.approx(original_ml, rel=0.1)
    shift = world_centroid(arrays.label > 0, arrays.affine) - world_centroid(original.array > 0, original.affine)
    assert np.linalg.norm(shift) < 3.0  # within one working voxel: the tumour sits where it was


@pytest.mark.slow
def test_freesurfer_subjects_read_back_to_the_demo_brain_in_its_place(demo_sets):
    case = find_cases(demo_sets["freesurfer"]).cases[0]
    aseg = load_volume(case.label)
    assert aseg.array.shape == CONFORMED_SHAPE and nib.aff2axcodes(aseg.affine) == ("L", "I", "A")
    assert {77, 253} <= set(np.unique(aseg.array).tolist())  # aseg ids outside SynthSeg's classes
    # a 2 mm grid: at the demo's 6 mm, nearest-neighbour sampling of a grid shifted by part of a voxel
    # moves a 150-voxel ventricle system by up to ~15 %
    arrays = read_case(case, WorkingGrid((112, 112, 112), (2.0, 2.0, 2.0)), AnatomyLabels(), "label")
    assert set(np.unique(arrays.label).tolist()) <= set(SYNTHSEG_LABEL_IDS)
    original = load_volume(read_datalist(demo_sets["brains"])[0]["label"])
    ventricles = [
        ventricle_mask(a).sum() * voxel_ml(f)
        for a, f in ((arrays.label, arrays.affine), (original.array, original.affine))
    ]
    assert ventricles[0] == pytest.approx(ventricles[1], rel=0.05)
    shift = world_centroid(arrays.label > 0, arrays.affine) - world_centroid(original.array > 0, original.affine)
    assert np.linalg.norm(shift) < 2.0  # within one working voxel


def test_anatomy_rule_maps_parcels_to_cortex_and_other_ids_to_their_neighbours():
    labels = np.full((6, 6, 6), 2, dtype=np.int32)
    labels[0] = 1003  # left cortical parcel
    labels[5] = 2010  # right cortical parcel
    labels[2:4, 2:4, 2:4] = 253  # corpus callosum, inside white matter
    labels[2:4, 2:4, 4] = 4  # a lateral ventricle beside it: the callosum stays white matter
    labels[2, 4, 2] = 30  # a vessel: takes its nearest neighbour
    labels[:, :, 0] = 0
    mapped = AnatomyLabels()(labels)
    assert mapped[2, 4, 2] == 2
    assert mapped.dtype == np.int16
    assert set(np.unique(mapped[0, :, 1:]).tolist()) == {3} and set(np.unique(mapped[5, :, 1:]).tolist()) == {42}
    assert set(np.unique(mapped[2:4, 2:4, 2:4]).tolist()) == {2} and (mapped[2:4, 2:4, 4] == 4).all()
    assert (mapped[:, :, 0] == 0).all()


def test_anatomy_rule_refuses_a_map_without_brain_labels():
    with pytest.raises(InputError, match="no brain label"):
        AnatomyLabels()(np.full((4, 4, 4), 999), "x.nii.gz")


def test_whole_tumour_merges_subregions_and_refuses_foreign_ids():
    seg = np.array([[[0, 1, 2, 4]]])
    np.testing.assert_array_equal(WholeTumour()(seg), [[[0, 1, 1, 1]]])
    np.testing.assert_array_equal(WholeTumour((2, 3))(np.array([[[3, 0, 2]]])), [[[1, 0, 1]]])
    with pytest.raises(InputError, match=r"seg.nii.gz: label ids \[7\]"):
        WholeTumour()(np.array([[[0, 7]]]), "seg.nii.gz")
    with pytest.raises(InputError, match="tumour ids"):
        WholeTumour((0, 1))


def brats_folder(root, name, files=("flair", "seg")):
    for kind in files:
        save_nifti(root / name / f"{name}_{kind}.nii.gz", np.zeros((8, 8, 8), dtype=np.int16))
    return root / name


def test_a_case_folder_without_its_segmentation_stops_the_search_unless_skipping_is_allowed(tmp_path):
    brats_folder(tmp_path, "BraTS2021_00000")
    brats_folder(tmp_path, "BraTS2021_00001", files=("flair",))
    with pytest.raises(InputError, match=r"BraTS2021_00001: no segmentation"):
        find_cases(tmp_path)
    found = find_cases(tmp_path, skip_bad=True)
    assert [c.case for c in found.cases] == ["BraTS2021_00000"]
    assert found.skipped[0][0] == "BraTS2021_00001" and "no segmentation" in found.skipped[0][1]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda root: root, "no known layout"),
        (lambda root: root / "missing", "no such folder or file"),
        (lambda root: (root / "notes.txt").write_text("x") and root / "notes.txt", "must be a datalist"),
    ],
)
def test_sources_without_a_layout_are_refused_in_one_line(tmp_path, build, message):
    with pytest.raises(InputError, match=message):
        detect_layout(build(tmp_path))


def test_a_folder_with_two_layouts_asks_for_the_layout_and_a_named_layout_is_checked(tmp_path):
    brats_folder(tmp_path, "BraTS2021_00000")
    save_nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 4)))
    save_nifti(tmp_path / "a_synthseg.nii.gz", np.zeros((4, 4, 4), dtype=np.int16))
    with pytest.raises(InputError, match="several layouts"):
        find_cases(tmp_path)
    assert [c.case for c in find_cases(tmp_path, layout="synthseg").cases] == ["a"]
    with pytest.raises(InputError, match="layout: expected one of"):
        find_cases(tmp_path, layout="nifti")


def test_freesurfer_templates_are_not_subjects_and_a_subject_needs_an_intensity_volume(tmp_path):
    for subject in ("fsaverage", "bert"):
        (tmp_path / subject / "mri").mkdir(parents=True)
        nib.save(
            nib.MGHImage(np.zeros((4, 4, 4), dtype=np.int32), np.eye(4)), str(tmp_path / subject / "mri" / "aseg.mgz")
        )
    with pytest.raises(InputError, match=r"bert/mri: no intensity volume"):
        find_cases(tmp_path)
    nib.save(nib.MGHImage(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4)), str(tmp_path / "bert" / "mri" / "norm.mgz"))
    found = find_cases(tmp_path)
    assert found.layout == "freesurfer" and [c.case for c in found.cases] == ["bert"]
    assert found.cases[0].image.name == "norm.mgz"


def test_table_and_datalist_sources_name_their_bad_rows_and_files(tmp_path):
    save_nifti(tmp_path / "img.nii.gz", np.zeros((4, 4, 4)))
    save_nifti(tmp_path / "seg.nii.gz", np.zeros((4, 4, 4), dtype=np.int16))
    table = tmp_path / "cases.csv"
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows([["image", "label", "subject"], ["img.nii.gz", "seg.nii.gz", "P1"]])
    found = find_cases(table)
    assert found.cases == (CaseFiles("seg", tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz", "P1"),)
    table.write_text("image,mask\nimg.nii.gz,seg.nii.gz\n")
    with pytest.raises(InputError, match="needs columns 'image' and 'label'"):
        find_cases(table)
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": [{"image": "img.nii.gz", "label": "gone.nii.gz"}]}))
    with pytest.raises(InputError, match=r"gone.nii.gz: no such file \(case gone\)"):
        find_cases(datalist)
    datalist.write_text(json.dumps({"training": [{"image": "img.nii.gz", "label": "seg.nii.gz"}] * 2}))
    with pytest.raises(InputError, match="case name 'seg' is also"):
        find_cases(datalist)


def test_a_head_larger_than_the_working_field_of_view_is_refused_not_cut(tmp_path):
    labels = np.zeros((40, 40, 40), dtype=np.int16)
    labels[2:38, 2:38, 2:38] = 2
    save_nifti(tmp_path / "img.nii.gz", np.ones((40, 40, 40), dtype=np.float32))
    save_nifti(tmp_path / "seg.nii.gz", labels)
    case = CaseFiles("c", tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz")
    with pytest.raises(
        InputError, match=r"img.nii.gz: head larger than the working field of view \(axis 0: 36 mm > 32 mm"
    ):
        read_case(case, WorkingGrid((16, 16, 16), (2.0, 2.0, 2.0)), AnatomyLabels())
    arrays = read_case(case, WorkingGrid((20, 20, 20), (2.0, 2.0, 2.0)), AnatomyLabels())
    assert arrays.label.shape == (20, 20, 20) and (arrays.label == 2).sum() == 18**3


def test_working_grid_is_validated():
    with pytest.raises(InputError, match="shape must be three integers"):
        WorkingGrid((4, 32, 32), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="spacing must be three positive"):
        WorkingGrid((32, 32, 32), (1.0, 0.0, 1.0))


def brats_2023_case(root, name, tumour=True):
    """A tiny BraTS 2023 case folder: a bright cube of brain with a small tumour (ids 1/2/3)."""
    image = np.zeros((16, 16, 16), dtype=np.int16)
    image[3:13, 3:13, 3:13] = 400
    seg = np.zeros((16, 16, 16), dtype=np.int16)
    if tumour:
        seg[6:10, 6:10, 6:10] = 2
        seg[7:9, 7:9, 7:9] = 3
    save_nifti(root / name / f"{name}-t2f.nii.gz", image)
    save_nifti(root / name / f"{name}-seg.nii.gz", seg)


def test_working_set_keeps_every_timepoint_of_a_subject_on_one_side_of_the_split(tmp_path):
    for name in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000", "BraTS-GLI-00003-001"):
        brats_2023_case(tmp_path / "brats", name)
    datalist = write_working_set(
        tmp_path / "brats", tmp_path / "set", "tumours", (16, 16, 16), (1.0, 1.0, 1.0), validation_fraction=0.34
    )
    training, validation = read_datalist(datalist, ["training"]), read_datalist(datalist, ["validation"])
    assert [item["case"] for item in validation] == ["BraTS-GLI-00003-000", "BraTS-GLI-00003-001"]
    assert {item["subject"] for item in training} == {"BraTS-GLI-00001", "BraTS-GLI-00002"}
    mask = load_volume(training[0]["label"])
    assert mask.array.shape == (16, 16, 16) and int(mask.array.sum()) == 64  # sub-regions 2 and 3 merged
    description = json.loads((tmp_path / "set" / "dataset.json").read_text())
    assert description["layout"] == "brats" and description["skipped"] == []


def test_working_set_stops_on_a_bad_case_with_nothing_written_or_lists_it_when_told(tmp_path):
    brats_2023_case(tmp_path / "brats", "BraTS-GLI-00001-000")
    brats_2023_case(tmp_path / "brats", "BraTS-GLI-00002-000")
    (tmp_path / "brats" / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-seg.nii.gz").write_bytes(b"not a volume")
    grid = ((16, 16, 16), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match=r"BraTS-GLI-00002-000-seg.nii.gz: cannot read volume"):
        write_working_set(tmp_path / "brats", tmp_path / "set", "tumours", *grid)
    assert not (tmp_path / "set").exists() and not list(tmp_path.glob(".set*"))
    datalist = write_working_set(tmp_path / "brats", tmp_path / "set", "tumours", *grid, skip_bad=True)
    assert [item["case"] for item in read_datalist(datalist)] == ["BraTS-GLI-00001-000"]
    skipped = json.loads((tmp_path / "set" / "dataset.json").read_text())["skipped"]
    assert skipped[0]["case"] == "BraTS-GLI-00002-000" and "cannot read volume" in skipped[0]["reason"]


@pytest.mark.slow
def test_freesurfer_subjects_become_a_working_set_the_other_tools_read(demo_sets, tmp_path):
    done = run_script(
        "prepare_dataset.py", str(demo_sets["freesurfer"]), str(tmp_path / "brains"), "brains", "32,32,32", "6,6,6"
    )
    assert done.returncode == 0, done.stderr
    items = read_datalist(tmp_path / "brains" / "datalist.json")
    assert [(item["case"], item["subject"]) for item in items] == [("sub-000", "sub-000"), ("sub-001", "sub-001")]
    labels = load_volume(items[0]["label"])
    assert labels.array.shape == (32, 32, 32) and set(np.unique(labels.array).tolist()) <= set(SYNTHSEG_LABEL_IDS)


def test_prepare_dataset_refuses_a_grid_too_small_in_one_line(tmp_path):
    brats_2023_case(tmp_path / "brats", "BraTS-GLI-00001-000")
    done = run_script(
        "prepare_dataset.py", str(tmp_path / "brats"), str(tmp_path / "out"), "tumours", "4,16,16", "1,1,1"
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: working grid: shape must be three integers >= 8, got (4, 16, 16)"
    )
    assert not (tmp_path / "out").exists()
