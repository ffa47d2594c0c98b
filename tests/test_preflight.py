"""`cnnpipe preflight`, what `make repro` runs before `dvc repro`: silent but for one line on a
source without an image folder, one clear line for each problem it exists to catch."""

import os

import pytest
import yaml

from cnnpipe.cli import main

ROOT_PARAMS = os.path.join(os.path.dirname(__file__), "..", "params.yaml")


def _params(tmp_path, **data) -> str:
    params = yaml.safe_load(open(ROOT_PARAMS))
    params["data"].update(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return str(path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_default_source_needs_no_image_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/images here, as on a fresh clone
    assert main(["preflight", "--params", _params(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.strip().splitlines() == [
        "preflight: 9 variants; data.source is fashion_mnist, no image folder to check"]


def test_a_missing_image_folder_is_one_line_naming_the_param_and_the_docs(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, source="image_folder", input="data/images")
    assert main(["preflight", "--params", params]) == 2
    line = _one_error_line(capsys)
    assert "data.image_folder.path (data/images) is not a folder" in line
    assert 'docs/data.md, "Bring your own images"' in line


def test_an_image_folder_source_is_checked_for_special_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/images/cat").mkdir(parents=True)
    os.mkfifo(tmp_path / "data/images/cat/pipe.jpg")
    params = _params(tmp_path, source="image_folder", input="data/images")
    assert main(["preflight", "--params", params]) == 1
    assert "data/images/cat/pipe.jpg: a FIFO" in capsys.readouterr().err


def test_a_missing_params_file_is_one_line(tmp_path, capsys):
    assert main(["preflight", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "params.yaml not found: run from the repository root" in _one_error_line(capsys)


@pytest.mark.parametrize("models", [{}, None])
def test_no_variants_is_one_line_before_dvcs_foreach_error(tmp_path, capsys, models):
    path = tmp_path / "params.yaml"
    params = yaml.safe_load(open(ROOT_PARAMS))
    params["models"] = models
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["preflight", "--params", str(path)]) == 2
    assert "models must be a non-empty mapping" in _one_error_line(capsys)


def test_a_key_dvc_yaml_reads_is_named_when_missing(tmp_path, capsys):
    """`data.input` is interpolated by dvc.yaml itself: without it DVC's parse error comes first."""
    params = yaml.safe_load(open(ROOT_PARAMS))
    del params["data"]["input"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text(open(os.path.join(os.path.dirname(ROOT_PARAMS),
                                                         "dvc.yaml")).read())
    assert main(["preflight", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "missing `data.input`, which dvc.yaml reads" in _one_error_line(capsys)
