"""The OODS with the real archiver on Mosquitto: images taken by the simulated camera,
archived, registered in the archive's Butler repository and said (imageInOODS); the
Butler and ConsDB then hold each of them once. (Its rules are tested offline in
test_oods.py, with the real libraries in test_oods_stores.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from cscs.core.broker import EmbeddedBroker
from cscs.core.settings import Settings
from cscs.core.testing import make_csc
from cscs.oods.csc import OodsCsc
from cscs.repository import Repository
from sim.testkit import observatory

pytestmark = pytest.mark.broker


async def test_images_archived_are_registered_and_said(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    prefix = f"oods{index}"
    async with observatory(mosquitto, prefix, tmp_path, index=2, weather=False) as obs:
        configs = tmp_path / "oods-config" / "OODS"
        configs.mkdir(parents=True)
        (configs / "test.yaml").write_text(f"archive_root: {obs.archive}\nbatch_delay: 0.1\n")
        settings = Settings(prefix=prefix, state_dir=tmp_path / "oods-state",
                            config_dir=configs.parent)  # fmt: skip
        async with make_csc(OodsCsc, mosquitto, index=2, settings=settings) as oods:
            await oods.remote.command("start", {"configurationOverride": "test"}, timeout=60)
            await oods.remote.command("enable")
            async with oods.remote.stream("imageInOODS") as said:
                archived = await obs.take_images(2, "BIAS")
                heard = [(await said.next(60)).data for _ in archived]
    assert {h["imageName"] for h in heard} == set(archived)
    for event in heard:
        assert event["statusCode"] == 0, event
        files = archived[event["imageName"]]
        assert event["sensors"] == ",".join(sorted(f.sensor for f in files))
    repo = Repository.open(obs.archive)
    try:
        refs = repo.query_raws("instrument = 'LSSTComCam'", limit=100)
    finally:
        repo.close()
    assert sorted({(r.image_name, r.sensor) for r in refs}) == sorted(
        (image, f.sensor) for image, files in archived.items() for f in files
    )
