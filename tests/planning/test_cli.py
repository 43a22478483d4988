"""Tests of nnunet_ext.planning.cli: checks before any work, and the undo of a failed run in nnUNet_preprocessed."""
import hashlib
import json
import os
from pathlib import Path

import pytest

from nnunet_ext.cli import main
from nnunet_ext.errors import UserInputError
from nnunet_ext.planning import cli as planning

NAME = "Dataset005_Tiny"


def tree_state(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (files) or 'dir', for everything under ``root`` (hidden entries included)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    raw, preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    (raw / NAME).mkdir(parents=True)
    (raw / NAME / "dataset.json").write_text("{}")
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return raw, preprocessed


def _existing_preprocessed(preprocessed: Path) -> None:
    """A previous successful run: plans, fingerprint, one configuration's data, gt_segmentations."""
    folder = preprocessed / NAME
    (folder / "nnUNetPlansCPU_3d_fullres").mkdir(parents=True)
    (folder / "gt_segmentations").mkdir()
    (folder / "nnUNetPlansCPU.json").write_text(json.dumps({"plans": "old"}))
    (folder / "dataset_fingerprint.json").write_text(json.dumps({"fingerprint": "old"}))
    (folder / "nnUNetPlansCPU_3d_fullres" / "case_0000.b2nd").write_bytes(b"old data" * 100)
    (folder / "gt_segmentations" / "case_0000.nii.gz").write_bytes(b"old label")


class Stage(Exception):
    pass


def _fake_nnunet(monkeypatch, preprocessed: Path, fail_at: str | None, error: type[BaseException] = Stage):
    """Stand-ins for nnU-Net's API that write (and overwrite in place) the way nnU-Net does, then fail at a stage."""
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api

    folder = preprocessed / NAME

    def extract_fingerprints(ids, **kwargs):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dataset_fingerprint.json").write_text(json.dumps({"fingerprint": "new"}))
        if fail_at == "fingerprint":
            raise error("fingerprint failed")

    def plan_experiment_dataset(dataset_id, planner_class, *args, **kwargs):
        with open(folder / "nnUNetPlansCPU.json", "w") as handle:  # in place, like save_json
            handle.write(json.dumps({"plans": "new"}))
        (folder / "dataset.json").write_text("{}")
        if fail_at == "plan":
            raise error("planning failed")
        return {}, "nnUNetPlansCPU"

    def preprocess(ids, plans_identifier, configurations, num_processes, verbose):
        import shutil

        data = folder / "nnUNetPlansCPU_3d_fullres"
        if data.exists():
            shutil.rmtree(data)  # as DefaultPreprocessor.run does
        data.mkdir()
        (data / "case_0000.b2nd").write_bytes(b"new data")
        (folder / "nnUNetPlansCPU_2d").mkdir(exist_ok=True)
        (folder / "gt_segmentations").mkdir(exist_ok=True)
        with open(folder / "gt_segmentations" / "case_0000.nii.gz", "wb") as handle:  # in place, like copy_file
            handle.write(b"new label")
        if fail_at == "preprocess":
            raise error("preprocessing failed")

    monkeypatch.setattr(api, "extract_fingerprints", extract_fingerprints)
    monkeypatch.setattr(api, "plan_experiment_dataset", plan_experiment_dataset)
    monkeypatch.setattr(api, "preprocess", preprocess)
    monkeypatch.setattr(planning, "find_planner_class", lambda name: object)


@pytest.mark.parametrize("fail_at", ["fingerprint", "plan", "preprocess"])
@pytest.mark.parametrize("existed", [False, True], ids=["fresh", "existing"])
def test_a_failed_run_leaves_nnunet_preprocessed_as_it_was(roots, monkeypatch, fail_at, existed):
    raw, preprocessed = roots
    if existed:
        _existing_preprocessed(preprocessed)
    before = tree_state(preprocessed)
    _fake_nnunet(monkeypatch, preprocessed, fail_at)
    with pytest.raises(Stage):  # an unexpected failure is re-raised (a traceback), after the undo
        planning.plan_and_preprocess([5], "CPUPlanner", ("3d_fullres",))
    assert tree_state(preprocessed) == before  # also: no backup or aside folders left behind
    assert preprocessed.exists() == existed


def test_interrupt_is_undone_too(roots, monkeypatch):
    raw, preprocessed = roots
    _existing_preprocessed(preprocessed)
    before = tree_state(preprocessed)
    _fake_nnunet(monkeypatch, preprocessed, "preprocess", KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        planning.plan_and_preprocess([5], "CPUPlanner", ("3d_fullres",))
    assert tree_state(preprocessed) == before


def test_a_successful_run_keeps_its_output_and_drops_the_backup(roots, monkeypatch):
    raw, preprocessed = roots
    _existing_preprocessed(preprocessed)
    _fake_nnunet(monkeypatch, preprocessed, None)
    assert planning.plan_and_preprocess([5], "CPUPlanner", ("3d_fullres",)) == "nnUNetPlansCPU"
    assert sorted(p.name for p in preprocessed.iterdir()) == [NAME]
    folder = preprocessed / NAME
    assert json.loads((folder / "nnUNetPlansCPU.json").read_text()) == {"plans": "new"}
    assert (folder / "nnUNetPlansCPU_3d_fullres" / "case_0000.b2nd").read_bytes() == b"new data"
    assert (folder / "nnUNetPlansCPU_2d").is_dir()


def test_deterministic_worker_setting_is_lifted_for_the_planner_only(roots, monkeypatch):
    """nnUNet_n_proc_DA=0 (in-process augmentation) would crash nnU-Net's planner (torch.set_num_threads(0)): the
    nnU-Net steps see 1, the caller keeps its 0."""
    import nnunetv2.experiment_planning.plan_and_preprocess_api as api

    raw, preprocessed = roots
    _fake_nnunet(monkeypatch, preprocessed, None)
    seen = []
    fake_extract = api.extract_fingerprints
    monkeypatch.setattr(api, "extract_fingerprints",
                        lambda *a, **k: seen.append(os.environ["nnUNet_n_proc_DA"]) or fake_extract(*a, **k))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    planning.plan_and_preprocess([5], "CPUPlanner", ("3d_fullres",))
    assert seen == ["1"] and os.environ["nnUNet_n_proc_DA"] == "0"


def test_snapshot_links_configuration_data_and_copies_files_rewritten_in_place(roots):
    raw, preprocessed = roots
    _existing_preprocessed(preprocessed)
    snapshot = planning._take_snapshot(preprocessed / NAME)
    data = "nnUNetPlansCPU_3d_fullres/case_0000.b2nd"
    assert os.path.samefile(snapshot.backup / data, preprocessed / NAME / data)
    for rewritten in ("nnUNetPlansCPU.json", "gt_segmentations/case_0000.nii.gz"):
        assert not os.path.samefile(snapshot.backup / rewritten, preprocessed / NAME / rewritten)
    assert tree_state(snapshot.backup) == tree_state(preprocessed / NAME)


def _second_dataset(raw, preprocessed):
    (preprocessed / "Dataset005_Old").mkdir(parents=True)


BAD = {
    "id_out_of_range": (None, ["-d", "1000"], "-d: dataset id must be in 1..999, got 1000"),
    "id_twice": (None, ["-d", "5", "5"], "-d lists a dataset id twice: 5 5"),
    "unknown_id": (None, ["-d", "6"], "no dataset with id 6 in "),
    "unknown_configuration": (None, ["-d", "5", "-c", "3d_highres"],
                              "-c: unknown configuration 3d_highres (choose from 2d, 3d_fullres, 3d_lowres)"),
    "unknown_planner": (None, ["-d", "5", "-pl", "NoSuchPlanner"], "planner 'NoSuchPlanner' not found"),
    "not_a_planner": (None, ["-d", "5", "-pl", "DefaultPreprocessor"], "planner 'DefaultPreprocessor' not found"),
    "zero_processes": (None, ["-d", "5", "-np", "0"], "-np must be >= 1, got 0"),
    "plans_name_with_path": (None, ["-d", "5", "-overwrite_plans_name", "../x"], "must be a plain file name"),
    "stale_name_elsewhere": (_second_dataset, ["-d", "5"], "Dataset005_Old in "),
}


@pytest.mark.parametrize("prepare, argv, message", BAD.values(), ids=BAD.keys())
def test_bad_arguments_fail_before_any_work(roots, monkeypatch, capsys, prepare, argv, message):
    raw, preprocessed = roots
    if prepare:
        prepare(raw, preprocessed)
    before = tree_state(preprocessed)
    from nnunetv2.experiment_planning import plan_and_preprocess_api as api

    monkeypatch.setattr(api, "extract_fingerprints", lambda *a, **k: pytest.fail("work started"))
    assert main(["plan_and_preprocess", *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nnunet-ext plan_and_preprocess: error: ") and message in err[0]
    assert tree_state(preprocessed) == before


@pytest.mark.parametrize("variable", ["nnUNet_raw", "nnUNet_preprocessed"])
def test_unset_paths_are_one_line_errors(roots, monkeypatch, variable):
    monkeypatch.delenv(variable)
    with pytest.raises(UserInputError, match=f"{variable} is not set"):
        planning.plan_and_preprocess([5])


@pytest.mark.slow
def test_real_nnunet_failure_while_preprocessing_is_undone(tmp_path, nnunet_env, monkeypatch):
    """nnU-Net's own fingerprint and planning run, then its preprocessor fails after deleting the old data."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from nnunet_ext.synth.cli import synthesize

    synthesize("breast_dce", 5, cases=2, test_cases=0, raw=nnunet_env["nnUNet_raw"],
               options={"shape": (8, 24, 24)})
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"])
    folder = preprocessed / "Dataset005_BreastDCE"
    folder.mkdir()
    (folder / "nnUNetPlansCPU.json").write_text(json.dumps({"configurations": {}, "note": "an earlier run"}))
    before = tree_state(preprocessed)

    def broken_run(self, *args, **kwargs):
        raise MemoryError("worker killed")

    monkeypatch.setattr(DefaultPreprocessor, "run", broken_run)
    with pytest.raises(MemoryError):
        planning.plan_and_preprocess([5], "CPUPlanner", ("3d_fullres",))
    assert tree_state(preprocessed) == before
