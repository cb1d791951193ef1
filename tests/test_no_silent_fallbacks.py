"""The loader refuses what used to fall back silently (issue 11 item 5): DAPE missing, turbo without sd-turbo."""

from __future__ import annotations

import pytest

from seesr.errors import WeightsError
from tests.tiny_pipeline import official_parts


def test_official_parts_without_dape_are_refused(fixtures_dir):
    from seesr.pipeline.pipeline import SeeSRPipeline

    parts = official_parts(fixtures_dir)
    parts.pop("dape")
    with pytest.raises(WeightsError, match="no DAPE.pth given.*tagger='ram'") as err:
        SeeSRPipeline.from_official(**parts)
    assert "\n" not in str(err.value)
    plain = SeeSRPipeline.from_official(**parts, tagger="ram")
    dape = SeeSRPipeline.from_official(**official_parts(fixtures_dir))
    assert plain.dape is not None
    assert not all(
        (a == b).all() for a, b in zip(plain.dape.state_dict().values(), dape.dape.state_dict().values())
    ), "plain RAM must really be RAM without the LoRA"


def test_dape_with_a_tagger_that_ignores_it_is_an_error(fixtures_dir):
    from seesr.pipeline.pipeline import SeeSRPipeline

    with pytest.raises(ValueError, match="tagger='ram'"):
        SeeSRPipeline.from_official(**official_parts(fixtures_dir), tagger="ram")
    with pytest.raises(ValueError, match="tagger must be one of"):
        SeeSRPipeline.from_official(**official_parts(fixtures_dir), tagger="clip")


def test_check_preset_weights(fixtures_dir):
    from seesr.pipeline.loading import check_preset_weights
    from tests.tiny_pipeline import build_tiny_pipeline

    plain = build_tiny_pipeline(fixtures_dir)
    turbo = build_tiny_pipeline(fixtures_dir, turbo=True)
    with pytest.raises(WeightsError, match="seesr download --turbo.*--turbo-unet") as err:
        check_preset_weights("turbo", plain)
    assert "\n" not in str(err.value)
    check_preset_weights("turbo", turbo)
    check_preset_weights("default", plain)
    with pytest.raises(WeightsError, match="sd-turbo UNet"):
        check_preset_weights("default", turbo)


def test_saved_folder_without_dape_is_refused(fixtures_dir, tmp_path):
    import shutil

    from seesr.pipeline.pipeline import SeeSRPipeline
    from tests.tiny_pipeline import build_tiny_pipeline

    build_tiny_pipeline(fixtures_dir).save_pretrained(tmp_path / "w")
    shutil.rmtree(tmp_path / "w" / "dape")
    with pytest.raises(WeightsError, match="has no dape/"):
        SeeSRPipeline.from_pretrained(tmp_path / "w")
    assert SeeSRPipeline.from_pretrained(tmp_path / "w", tagger="none").dape is None
    with pytest.raises(WeightsError, match="preset turbo needs the sd-turbo UNet"):
        SeeSRPipeline.from_pretrained(tmp_path / "w", turbo=True, tagger="none")
