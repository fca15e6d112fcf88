"""Releases: snapshots from git or the working tree, the patches, and the errors that name the fix."""

from __future__ import annotations

import json

import pytest

from labkit.deploy.release import (REPO, Release, ReleaseError, _apply, patch_path, patches)


def test_every_patch_applies_to_the_working_tree_and_changes_the_code(tmp_path):
    base = Release.from_worktree(REPO, tmp_path)
    assert set(patches()) == {"compact_like_count", "error_spike", "memory_leak", "n_plus_one"}
    for name, what in patches().items():
        assert what, f"{name}.patch needs a first line saying what it changes"
        rel = Release.from_worktree(REPO, tmp_path, patch=name)
        assert rel.name == f"{base.name}+{name}" and rel.digest != base.digest
        assert (rel.labkit_dir / "web" / "views.py").read_text() != \
            (base.labkit_dir / "web" / "views.py").read_text()
        assert json.loads((rel.path / "RELEASE.json").read_text())["patch"] == name


def test_a_git_revision_is_snapshotted_with_git_archive(tmp_path):
    rel = Release.from_git(REPO, "HEAD", tmp_path)
    assert rel.source.startswith("git HEAD ") and (rel.labkit_dir / "web" / "wsgi.py").is_file()
    assert Release.load(rel.path) == rel
    # Made again, the same name replaces the old snapshot (the lab made it: it is marked).
    assert Release.from_git(REPO, "HEAD", tmp_path).digest == rel.digest


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ReleaseError, match="choose one of .*n_plus_one"):
        Release.from_worktree(REPO, tmp_path, patch="nope")
    with pytest.raises(ReleaseError, match="does the revision exist"):
        Release.from_git(REPO, "no-such-revision", tmp_path)
    with pytest.raises(ReleaseError, match="not the labkit package"):
        Release.from_worktree(tmp_path, tmp_path)
    # A patch that no longer fits the code says so, and how to remake it.
    rel = Release.from_worktree(REPO, tmp_path, patch="n_plus_one")
    with pytest.raises(ReleaseError, match="(?s)does not apply.*git diff"):
        _apply(patch_path("error_spike"), rel.path)
    # A directory the lab did not make is never deleted to make room for a release.
    mine = tmp_path / "mine"
    (mine / "labkit").mkdir(parents=True)
    with pytest.raises(ReleaseError, match="not a release snapshot"):
        Release.from_worktree(REPO, tmp_path, name="mine")
    assert (mine / "labkit").is_dir()
