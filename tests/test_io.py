"""Input validation and atomic writes: every bad input gives one line naming the file."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from conftest import save_nifti
from shared.io import (
    InputError,
    atomic_path,
    load_image,
    load_label_map,
    load_pair,
    load_volume,
    read_datalist,
    read_json,
    resolve_volume_inputs,
    save_volume,
    write_json,
)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as error:
        load_volume(tmp_path / "absent.nii.gz")
    assert _one_line(error) == f"{tmp_path / 'absent.nii.gz'}: no such file"


def test_folder_and_unsupported_type(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_volume(tmp_path)
    (tmp_path / "scan.png").write_bytes(b"x")
    with pytest.raises(InputError, match="scan.png: unsupported file type"):
        load_volume(tmp_path / "scan.png")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(b"this is not a nifti file at all" * 20)
    with pytest.raises(InputError) as error:
        load_volume(path)
    assert _one_line(error).startswith(f"{path}: cannot read volume, file is corrupt or truncated")


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_truncated_file(tmp_path, name):
    path = save_nifti(tmp_path / name, np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as error:
        load_volume(path)
    assert _one_line(error).startswith(f"{path}: cannot read volume, file is corrupt or truncated")


def test_non_3d_data(tmp_path):
    with pytest.raises(InputError, match=r"4d.nii.gz: expected a 3D volume, got shape \(4, 4, 4, 2\)"):
        load_volume(save_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 2), np.float32)))
    with pytest.raises(InputError, match=r"2d.nii.gz: expected a 3D volume, got shape \(4, 4\)"):
        load_volume(save_nifti(tmp_path / "2d.nii.gz", np.zeros((4, 4), np.float32)))


def test_singleton_fourth_axis_is_accepted(tmp_path):
    volume = load_volume(save_nifti(tmp_path / "s.nii.gz", np.ones((4, 5, 6, 1), np.float32)))
    assert volume.array.shape == (4, 5, 6)


def test_nan_and_inf(tmp_path):
    array = np.zeros((4, 4, 4), np.float32)
    array[0, 0, 0], array[1, 1, 1] = np.nan, np.inf
    with pytest.raises(InputError) as error:
        load_image(save_nifti(tmp_path / "nan.nii.gz", array))
    assert _one_line(error) == f"{tmp_path / 'nan.nii.gz'}: contains 2 NaN/Inf voxel(s)"


def test_image_label_shape_mismatch(tmp_path):
    image = save_nifti(tmp_path / "img.nii.gz", np.zeros((8, 8, 8), np.float32))
    label = save_nifti(tmp_path / "lab.nii.gz", np.zeros((8, 8, 9), np.int16))
    with pytest.raises(InputError) as error:
        load_pair(image, label)
    assert _one_line(error) == f"{label}: shape (8, 8, 9) differs from img.nii.gz shape (8, 8, 8)"


def test_image_label_affine_mismatch(tmp_path):
    image = save_nifti(tmp_path / "img.nii.gz", np.zeros((8, 8, 8), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    label = save_nifti(tmp_path / "lab.nii.gz", np.zeros((8, 8, 8), np.int16), np.diag([1.0, 1.0, 1.2, 1.0]))
    with pytest.raises(InputError, match=r"lab.nii.gz: affine differs from img.nii.gz \(max difference 0.2 mm\)"):
        load_pair(image, label)


def test_labels_outside_the_declared_set(tmp_path, label_volume):
    label_volume[0, 0, 0] = 99
    path = save_nifti(tmp_path / "lab.nii.gz", label_volume)
    with pytest.raises(InputError) as error:
        load_label_map(path, allowed_labels={0, 2, 4, 24})
    assert _one_line(error) == f"{path}: labels outside the declared set: 99"
    assert load_label_map(path).array.dtype == np.int32  # no declared set: any label is fine


def test_non_integer_and_negative_labels(tmp_path):
    with pytest.raises(InputError, match="frac.nii.gz: label map has non-integer values"):
        load_label_map(save_nifti(tmp_path / "frac.nii.gz", np.full((4, 4, 4), 0.5, np.float32)))
    with pytest.raises(InputError, match=r"neg.nii.gz: label map has negative values \(-1\)"):
        load_label_map(save_nifti(tmp_path / "neg.nii.gz", np.full((4, 4, 4), -1, np.int16)))


def test_freesurfer_mgz_big_endian_loads(tmp_path, label_volume):
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    nib.save(nib.MGHImage(label_volume.astype(np.int32), affine), str(tmp_path / "aseg.mgz"))
    volume = load_label_map(tmp_path / "aseg.mgz")
    np.testing.assert_array_equal(volume.array, label_volume)
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.voxel_volume_mm3 == pytest.approx(4.5)


def test_save_volume_round_trip_keeps_affine_and_dtype(tmp_path, label_volume):
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    path = save_volume(tmp_path / "out" / "lab.nii.gz", label_volume, affine, dtype=np.int16)
    volume = load_label_map(path)
    np.testing.assert_array_equal(volume.array, label_volume)
    np.testing.assert_allclose(volume.affine, affine)
    assert nib.load(str(path)).get_data_dtype() == np.int16
    assert [p.name for p in path.parent.iterdir()] == ["lab.nii.gz"]


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "table.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"version": 2, "half')
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_datalist_paths_resolve_against_its_folder(tmp_path, label_volume):
    save_nifti(tmp_path / "data" / "labels" / "a.nii.gz", label_volume)
    write_json(
        tmp_path / "data" / "datalist.json", {"training": [{"label": "labels/a.nii.gz", "c": 0.3}], "validation": []}
    )
    items = read_datalist(tmp_path / "data" / "datalist.json")
    assert items == [{"label": str(tmp_path / "data" / "labels" / "a.nii.gz"), "c": 0.3}]
    assert resolve_volume_inputs(tmp_path / "data" / "datalist.json") == [tmp_path / "data" / "labels" / "a.nii.gz"]
    with pytest.raises(InputError, match="datalist.json: datalist has no section 'testing'"):
        read_datalist(tmp_path / "data" / "datalist.json", ["testing"])
    with pytest.raises(InputError, match="datalist item 0 has no 'image' field"):
        resolve_volume_inputs(tmp_path / "data" / "datalist.json", key="image")


def test_empty_folder_and_malformed_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no volume files"):
        resolve_volume_inputs(tmp_path / "empty")
    (tmp_path / "list.json").write_text("{not json")
    with pytest.raises(InputError, match=r"list.json: not valid JSON"):
        read_datalist(tmp_path / "list.json")


def test_gzip_header_only_is_truncated(tmp_path):
    path = tmp_path / "empty.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"")
    with pytest.raises(InputError, match="empty.nii.gz: cannot read volume"):
        load_volume(path)


def test_unreadable_files_say_permission_denied(tmp_path, monkeypatch):
    # the suite may run as root, which reads any file: the OS refusal is simulated at open()
    import builtins

    volume = save_nifti(tmp_path / "locked.nii.gz", np.zeros((4, 4, 4), dtype=np.int16))
    (tmp_path / "locked.json").write_text("{}")
    real_open = builtins.open

    def refuse(file, *args, **kwargs):
        if str(file).startswith(str(tmp_path / "locked")):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(type(tmp_path), "read_text", lambda self, **_: refuse(self).read())
    with pytest.raises(InputError) as error:
        load_volume(volume)
    assert _one_line(error) == f"{volume}: cannot read volume, permission denied"
    with pytest.raises(InputError) as error:
        read_json(tmp_path / "locked.json")
    assert _one_line(error) == f"{tmp_path / 'locked.json'}: cannot read, permission denied"


def test_json_that_is_not_utf8_text_is_named(tmp_path):
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError) as error:
        read_json(tmp_path / "binary.json")
    assert _one_line(error) == f"{tmp_path / 'binary.json'}: not valid JSON (not UTF-8 text)"


def test_decathlon_dataset_json_with_an_unlabelled_test_list(tmp_path, label_volume):
    save_nifti(tmp_path / "labelsTr" / "case_0.nii.gz", label_volume)
    save_nifti(tmp_path / "imagesTs" / "case_1.nii.gz", label_volume.astype(np.float32))
    write_json(
        tmp_path / "dataset.json",
        {"training": [{"image": "./imagesTr/case_0.nii.gz", "label": "./labelsTr/case_0.nii.gz"}],
         "test": ["./imagesTs/case_1.nii.gz"]},
    )  # fmt: skip
    items = read_datalist(tmp_path / "dataset.json")
    assert items[1] == {"image": str((tmp_path / "imagesTs" / "case_1.nii.gz").resolve())}
    assert resolve_volume_inputs(tmp_path / "dataset.json") == [(tmp_path / "labelsTr" / "case_0.nii.gz").resolve()]
    images = resolve_volume_inputs(tmp_path / "dataset.json", key="image")
    assert [p.name for p in images] == ["case_0.nii.gz", "case_1.nii.gz"]
