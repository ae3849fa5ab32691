"""The prebuilt knowledge base the package ships (ragloom.kb.prebuilt): it is the embedded
default's, it holds exactly the embedded corpus encoded by that encoder, a damaged archive is
never unpacked, and ``ragloom kb package`` makes it again."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, encoder_workspace
from ragloom.cli import main
from ragloom.digest import file_sha256
from ragloom.kb import Document, KnowledgeBase, build_knowledge_base, packaged, prebuilt

DOCUMENTS = [
    Document("Animal Farm", "Animal Farm is a novella by George Orwell.", "0"),
    Document("Ampere", "The ampere is the SI unit of electric current.", "1"),
    Document("Paris", "Paris is the capital of France.", "2"),
]


def test_the_package_ships_the_knowledge_base_of_the_embedded_default(tmp_path: Path) -> None:
    """The archive is found for the default's encoder, verifies, and holds every passage of
    the corpus with the vectors that encoder gives them (a sample re-encoded)."""
    pytest.importorskip("gensim")
    from ragloom import Pipeline
    from ragloom.kb.documents import passages
    from ragloom.kb.wikipedia import wikipedia_documents

    encoder = Pipeline.from_spec(REPO / "examples" / "wikipedia.toml").encoder
    assert prebuilt.archive_path("wikipedia", encoder.fingerprint).is_file(), (
        "the embedded default's encoder changed: run `ragloom kb package wikipedia`"
    )
    target = tmp_path / "kb"
    assert prebuilt.install("wikipedia", encoder.fingerprint, target)
    kb = KnowledgeBase.open(target)
    corpus = list(passages(wikipedia_documents(), packaged.SPLIT_WORDS))
    assert len(kb) == len(corpus) == 4857
    sample = np.random.default_rng(0).choice(len(corpus), size=8, replace=False)
    stored = kb.passages.get(sample.tolist())
    assert [(p.title, p.text) for p in stored] == [
        (corpus[i].title, corpus[i].text) for i in sample
    ]
    encoded = encoder.encode_passages(
        [corpus[i].title for i in sample], [corpus[i].text for i in sample]
    )
    np.testing.assert_allclose(kb.vectors(sample), encoded.numpy(), atol=2e-3)


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    """A folder holding the prebuilt archive of a tiny KB, and its fingerprint."""
    from ragloom import Pipeline

    workspace = encoder_workspace(tmp_path / "workspace")
    encoder = Pipeline.from_spec(workspace / "spec.toml").encoder
    kb = tmp_path / "built"
    build_knowledge_base(iter(DOCUMENTS), encoder, kb, encoder_type="dpr", progress=False)
    folder = tmp_path / "prebuilt"
    prebuilt.write_archive(kb, "wikipedia", folder, "ragloom kb package wikipedia")
    return folder, encoder.fingerprint


def test_an_archive_unpacks_into_the_knowledge_base_it_was_made_from(
    archive: tuple[Path, str], tmp_path: Path
) -> None:
    folder, fingerprint = archive
    target = tmp_path / "cache" / "kb"
    assert prebuilt.install("wikipedia", fingerprint, target, folder)
    built = tmp_path / "built"
    for name in ("manifest.json", "passages.arrow", "embeddings.npy"):
        assert (target / name).read_bytes() == (built / name).read_bytes()
    assert not prebuilt.install("wikipedia", "0" * 16, tmp_path / "other", folder)
    assert not (tmp_path / "other").exists(), "no archive for that fingerprint: nothing written"


def test_an_archive_never_replaces_what_is_not_one(
    archive: tuple[Path, str], tmp_path: Path
) -> None:
    from ragloom.errors import ArtifactError

    folder, fingerprint = archive
    mine = tmp_path / "mine"
    mine.mkdir()
    users = prebuilt.archive_path("wikipedia", fingerprint, mine)
    users.write_bytes(b"a user's file")
    with pytest.raises(ArtifactError, match="is not a prebuilt archive of ragloom's"):
        prebuilt.write_archive(tmp_path / "built", "wikipedia", mine, "")
    assert users.read_bytes() == b"a user's file"
    prebuilt.write_archive(tmp_path / "built", "wikipedia", folder, "")  # its own: replaced


def test_archives_are_reproducible(archive: tuple[Path, str], tmp_path: Path) -> None:
    folder, fingerprint = archive
    again = prebuilt.write_archive(tmp_path / "built", "wikipedia", tmp_path / "again", "")
    assert (
        again.read_bytes() == prebuilt.archive_path("wikipedia", fingerprint, folder).read_bytes()
    )


def damage_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def forge_record(archive: Path) -> None:
    """Make the record agree with whatever the archive now holds."""
    record = json.loads(prebuilt.record_path(archive).read_text())
    record.update(size=archive.stat().st_size, sha256=file_sha256(archive))
    prebuilt.record_path(archive).write_text(json.dumps(record))


def rewrite_archive(archive: Path, members: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(buffer.getvalue())


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def swapped_vectors(archive: Path) -> None:
    files = members(archive)
    files["embeddings.npy"] = files["embeddings.npy"][:-4] + b"\0\0\0\0"
    rewrite_archive(archive, files)


def escaping(archive: Path) -> None:
    rewrite_archive(archive, {**members(archive), "../escaped": b"outside"})


def stray_file(archive: Path) -> None:
    rewrite_archive(archive, {**members(archive), "extra.bin": b"not in the manifest"})


def truncated(archive: Path) -> None:
    """The xz stream cut short after its first blocks: found while extracting."""
    files = members(archive)
    files["padding.bin"] = np.random.default_rng(0).bytes(1 << 20)  # past the first block
    rewrite_archive(archive, files)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 3 // 4])


def mislabelled(archive: Path) -> None:
    """An archive of another encoder's knowledge base under this one's name."""
    files = members(archive)
    manifest = json.loads(files["manifest.json"])
    manifest["encoder"]["fingerprint"] = "0" * 16
    files["manifest.json"] = json.dumps(manifest).encode()
    rewrite_archive(archive, files)


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        (damage_byte, "its SHA-256 is"),
        (
            lambda archive: prebuilt.record_path(archive).write_text("{}"),
            "not a valid archive record",
        ),
        (lambda archive: forge_record(damage_byte(archive) or archive), "cannot be unpacked"),
        (lambda archive: forge_record(swapped_vectors(archive) or archive), "checksum"),
        (lambda archive: forge_record(escaping(archive) or archive), "outside"),
        (lambda archive: forge_record(stray_file(archive) or archive), "does not name: extra.bin"),
    ],
    ids=[
        "flipped-byte",
        "bad-record",
        "corrupt-xz",
        "changed-vectors",
        "path-escape",
        "extra-file",
    ],
)
def test_a_damaged_archive_is_never_unpacked(
    archive: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, found
) -> None:
    folder, fingerprint = archive
    path = prebuilt.archive_path("wikipedia", fingerprint, folder)
    damage(path)
    target = tmp_path / "cache" / "kb"
    with caplog.at_level(logging.WARNING):
        assert not prebuilt.install("wikipedia", fingerprint, target, folder)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert found in warning.replace(str(path), "ARCHIVE") and "building it instead" in warning
    assert not target.exists() and not (tmp_path / "cache" / "escaped").exists()
    if target.parent.exists():  # the checks that pass the record run in a staging directory
        assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_kb_package_makes_the_archive_the_cache_unpacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragloom kb package`` builds the corpus with the spec's encoder into an archive that a
    first use of ``asset:wikipedia`` then unpacks instead of encoding."""
    from ragloom import Pipeline

    monkeypatch.setattr(packaged, "wikipedia_documents", lambda: iter(DOCUMENTS))
    monkeypatch.setenv("RAGLOOM_CACHE", str(tmp_path / "cache"))
    workspace = encoder_workspace(tmp_path / "workspace")
    folder = tmp_path / "prebuilt"
    assert (
        main(
            [
                "kb",
                "package",
                "wikipedia",
                "--spec",
                str(workspace / "spec.toml"),
                "--out",
                str(folder),
            ]
        )
        == 0
    )
    (archive,) = folder.glob("*.tar.xz")
    assert f"{archive}: the prebuilt wikipedia knowledge base" in capsys.readouterr().out
    record = prebuilt.record_path(archive)
    assert sorted(p.name for p in folder.iterdir()) == sorted([archive.name, record.name])

    monkeypatch.setattr(prebuilt, "FOLDER", folder)
    monkeypatch.setattr(packaged, "build", lambda *args: pytest.fail("encoded instead of unpacked"))
    encoder = Pipeline.from_spec(workspace / "spec.toml").encoder
    kb = KnowledgeBase.open(packaged.knowledge_base("asset:wikipedia", encoder, "dpr"))
    assert [p.title for p in kb.passages.get([0, 1, 2])] == [d.title for d in DOCUMENTS]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["kb", "package", "wikipedai", "--spec", "SPEC"],
            'no packaged knowledge base "wikipedai". Did you mean',
        ),
        (["kb", "package", "wikipedia", "--spec", "NOENCODER"], "[encoder]: missing"),
        (["kb", "package", "wikipedia", "--spec", "SPEC", "--out", "FILE"], "is a file; give"),
    ],
)
def test_kb_package_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    workspace = encoder_workspace(tmp_path / "workspace")
    no_encoder = tmp_path / "bm25.toml"
    no_encoder.write_text('schema = 1\n[retriever]\ntype = "bm25"\nkb = "asset:wikipedia"\n')
    (tmp_path / "file").write_text("not a folder")
    spec = {
        "SPEC": str(workspace / "spec.toml"),
        "NOENCODER": str(no_encoder),
        "FILE": str(tmp_path / "file"),
    }
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    argv = [spec.get(arg, arg) for arg in [*args, *out]]
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "refused before anything is written"


def test_the_package_ships_one_archive_per_corpus() -> None:
    """A new encoder's archive replaces the old one (each is 4 MB of the wheel)."""
    archives = sorted(prebuilt.FOLDER.glob(f"*{prebuilt.ARCHIVE_SUFFIX}"))
    assert [p.name.split("-")[0] for p in archives] == ["wikipedia"]
    assert sorted(prebuilt.FOLDER.glob("*.json")) == [prebuilt.record_path(archives[0])]


def test_a_damaged_archive_falls_back_to_building(
    archive: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragloom import Pipeline

    folder, fingerprint = archive
    damage_byte(prebuilt.archive_path("wikipedia", fingerprint, folder))
    monkeypatch.setattr(prebuilt, "FOLDER", folder)
    monkeypatch.setattr(packaged, "wikipedia_documents", lambda: iter(DOCUMENTS))
    monkeypatch.setenv("RAGLOOM_CACHE", str(tmp_path / "cache"))
    encoder = Pipeline.from_spec(tmp_path / "workspace" / "spec.toml").encoder
    kb = KnowledgeBase.open(packaged.knowledge_base("asset:wikipedia", encoder, "dpr"))
    assert kb.manifest.source["asset"] == "wikipedia" and len(kb) == len(DOCUMENTS)


def test_bm25_reads_the_very_passages_of_the_prebuilt(
    archive: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The passages-only KB (for bm25) is the prebuilt's passages file byte for byte, so a
    hybrid over the two never finds them different; the corpus is not read again."""
    folder, fingerprint = archive
    monkeypatch.setattr(prebuilt, "FOLDER", folder)
    monkeypatch.setattr(packaged, "build", lambda *args: pytest.fail("built instead of copied"))
    monkeypatch.setenv("RAGLOOM_CACHE", str(tmp_path / "cache"))
    passages_only = KnowledgeBase.open(packaged.knowledge_base("asset:wikipedia", None, "none"))
    shipped = KnowledgeBase.open(tmp_path / "cache" / "kb" / f"wikipedia-{fingerprint}")
    assert passages_only.dim == 0 and len(passages_only) == len(shipped) == len(DOCUMENTS)
    assert passages_only.manifest.passages_sha256 == shipped.manifest.passages_sha256
    assert passages_only.manifest.encoder.fingerprint == "none"
