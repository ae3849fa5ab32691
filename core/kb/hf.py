"""Knowledge bases in the format of transformers' ``RagRetriever(index_name="custom")``.

That format is a ``datasets.save_to_disk`` directory with columns ``title``, ``text`` and
``embeddings``, plus a faiss index file over the embeddings in row order. ``import_hf`` turns one
into a ragloom KB (row ``i`` stays passage ``i``); ``export_hf`` writes one from a KB.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..artifacts import file_marker
from ..digest import file_sha256
from ..errors import ArtifactError, IndexFileError, MismatchError, RagloomError
from .documents import Document
from .knowledge_base import EMBEDDINGS_FILE, INDEX_SUBDIR, KnowledgeBase, record_kb_files
from .manifest import (
    KB_KIND,
    UNVERIFIED,
    EncoderRecord,
    IndexManifest,
    KBManifest,
    ragloom_version,
    record_files,
)
from .passages import PASSAGES_FILE, write_passages
from .saved_dataset import kb_embeddings, load_kb_dataset

if TYPE_CHECKING:
    from ..protocols import Encoder

log = logging.getLogger(__name__)

EXPORT_MANIFEST = "ragloom-manifest.json"
EXPORT_KIND = file_marker("transformers knowledge base export", EXPORT_MANIFEST)
VERIFY_SAMPLE = 16


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise RagloomError(
            "reading or writing transformers' knowledge-base format needs the datasets package: "
            "pip install 'ragloom[hf]'"
        ) from None
    return datasets


def import_hf(
    passages_dir: Path,
    out: Path,
    index_file: Path | None = None,
    encoder: Encoder | None = None,
    encoder_type: str = UNVERIFIED,
    force: bool = False,
) -> KnowledgeBase:
    """A ragloom KB at ``out`` from a transformers custom knowledge base; a KB of other
    contents at ``out`` is replaced only with ``force``.

    With ``encoder``, a sample of passages is re-encoded and must match the stored embeddings;
    the KB then records that encoder's fingerprint. Without one, the KB records no fingerprint
    (:data:`~ragloom.kb.manifest.UNVERIFIED`) and a retriever needs ``allow_mismatch = true`` to
    use it; importing the same passages again with an encoder records it (no ``force`` needed).

    ``passages_dir`` may come from anyone: only its own files are read, and only the features a
    KB uses are accepted (:mod:`ragloom.kb.saved_dataset`); null titles read as empty, and null
    texts, uneven or non-finite embeddings are refused with the row.
    """
    import numpy as np

    _datasets()
    dataset = load_kb_dataset(passages_dir)
    embeddings = kb_embeddings(passages_dir, dataset)
    count, dim = embeddings.shape
    fingerprint = _verified_fingerprint(dataset, embeddings, encoder)
    with atomic.directory(out, KB_KIND) as staging:
        documents = (
            Document(row["title"] or "", row["text"], str(number))
            for number, row in enumerate(dataset.select_columns(["title", "text"]))
        )
        write_passages(staging / PASSAGES_FILE, documents)
        np.save(staging / EMBEDDINGS_FILE, embeddings)
        manifest = KBManifest(
            ragloom_version=ragloom_version(),
            count=count,
            dim=dim,
            embeddings_dtype="float32",
            encoder=EncoderRecord(type=encoder_type, fingerprint=fingerprint),
            passages_sha256=file_sha256(staging / PASSAGES_FILE),
            source={"imported_from": str(passages_dir.resolve())},
            files=record_kb_files(staging),
        )
        _refuse_other_contents(out, manifest, force)
        manifest.write(staging)
        if index_file is not None:
            _import_index(index_file, staging, manifest)
    return KnowledgeBase.open(out)


def _refuse_other_contents(out: Path, manifest: KBManifest, force: bool) -> None:
    """Refuse to import over a KB whose passages, embeddings or encoder differ, unless
    ``force``: they and its indexes would be lost. The same import again is allowed."""
    if force or not KB_KIND.recognizes(out):
        return
    try:
        existing = KBManifest.read(out, "ragloom knowledge base")
    except IndexFileError:
        return  # a damaged KB is replaced
    if existing.files == manifest.files and (
        existing.encoder == manifest.encoder or existing.encoder.unverified
    ):
        return  # the same import again, or one that records the encoder
    raise ArtifactError(
        f"{out} is a knowledge base of other contents ({existing.count} passages, encoder "
        f"{existing.encoder.described()}). Importing over it replaces its passages, embeddings "
        f"and indexes: pass --force to do that, or choose another --out."
    )


def _verified_fingerprint(dataset: Any, embeddings: Any, encoder: Encoder | None) -> str:
    import numpy as np

    if encoder is None:
        log.warning(
            "no encoder given: the imported KB records no encoder fingerprint, so a retriever "
            "needs [retriever] allow_mismatch = true to use it. To record one, import it again "
            "with --spec SPEC, the spec whose [encoder] made the embeddings."
        )
        return UNVERIFIED
    rows = list(range(min(VERIFY_SAMPLE, len(dataset))))
    sample = dataset.select(rows)
    titles = [title or "" for title in sample["title"]]
    vectors = encoder.encode_passages(titles, sample["text"]).numpy()
    if vectors.shape[1] != embeddings.shape[1]:
        raise MismatchError(
            f"the encoder makes {vectors.shape[1]}-dim vectors, the stored embeddings are "
            f"{embeddings.shape[1]}-dim: they come from another encoder."
        )
    error = float(np.abs(vectors - embeddings[rows]).max())
    scale = float(np.abs(embeddings[rows]).max()) or 1.0
    if error > 1e-3 * scale:
        raise MismatchError(
            f"re-encoding {len(rows)} passages with the given encoder differs from the stored "
            f"embeddings by up to {error:.3g}: they were made by another encoder (or settings)."
        )
    return encoder.fingerprint


def _import_index(index_file: Path, staging: Path, manifest: KBManifest) -> None:
    """Wrap a faiss file as the matching ragloom index type inside the KB."""
    import faiss
    import numpy as np

    from ..plugin_manager import get_registry
    from ..spec import load_component

    if not index_file.is_file():
        raise IndexFileError(
            f"--index {index_file} is not a file; give the faiss index file saved with "
            f"faiss.write_index beside the dataset (transformers' index_path)."
        )
    try:
        index = faiss.read_index(str(index_file))
    except RuntimeError as error:
        raise IndexFileError(f"{index_file} is not a readable faiss index ({error}).") from None
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexFileError(
            f"{index_file} searches by L2 distance; ragloom indexes search by inner product. "
            f"Import without --index and build one with `ragloom index build`."
        )
    if index.ntotal != manifest.count or index.d != manifest.dim:
        raise IndexFileError(
            f"{index_file} holds {index.ntotal} vectors of dim {index.d}, the passages "
            f"{manifest.count} of dim {manifest.dim}."
        )
    type_name, params = _recognize(index)
    registry = get_registry()
    table = {"type": type_name, **params}
    declared = load_component("index", table, registry=registry, name=str(index_file)).declared(
        registry
    )
    wrapped = declared.component(manifest.dim, declared.params, index, np.arange(index.ntotal))
    target = KnowledgeBase.index_path_in(staging, declared)
    wrapped.save(target / INDEX_SUBDIR)
    IndexManifest(
        files=record_files(target),
        type=type_name,
        params=declared.params.model_dump(mode="json"),
        dim=manifest.dim,
        metric="ip",
        count=manifest.count,
        encoder_fingerprint=manifest.encoder.fingerprint,
        passages_sha256=manifest.passages_sha256,
        build_seconds=0.0,
        ragloom_version=ragloom_version(),
    ).write(target)


def _recognize(index: Any) -> tuple[str, dict[str, Any]]:
    import faiss

    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexFlat):
        return "faiss-exact", {}
    if isinstance(concrete, faiss.IndexHNSW):
        hnsw = concrete.hnsw
        params = {
            "M": int(hnsw.nb_neighbors(1)),  # type: ignore[attr-defined]
            "ef_construction": int(hnsw.efConstruction),
            "ef_search": int(hnsw.efSearch),
        }
        storage = faiss.downcast_index(concrete.storage)
        if isinstance(storage, faiss.IndexFlat):
            return "faiss-hnsw", params
        if isinstance(storage, faiss.IndexScalarQuantizer):
            return "faiss-hnsw-sq8", params
    raise IndexFileError(
        f"cannot import a {type(concrete).__name__}: ragloom reads IndexFlatIP, IndexHNSWFlat and "
        f"HNSW over SQ8. Import without --index and build one with `ragloom index build`."
    )


def export_hf(kb: KnowledgeBase, out: Path) -> tuple[Path, Path]:
    """Write ``out/passages`` (datasets) and ``out/index.faiss`` (exact inner product)."""
    import faiss
    import numpy as np

    datasets = _datasets()
    passages_dir, index_path = out / "passages", out / "index.faiss"
    with atomic.directory(out, EXPORT_KIND) as staging:
        titles, texts = kb.passages.columns(0, len(kb))
        embeddings = np.asarray(kb.embeddings, dtype=np.float32)
        features = datasets.Features(
            {
                "title": datasets.Value("string"),
                "text": datasets.Value("string"),
                "embeddings": datasets.Sequence(datasets.Value("float32")),
            }
        )
        dataset = datasets.Dataset.from_dict(
            {"title": titles, "text": texts, "embeddings": list(embeddings)}, features=features
        )
        dataset.save_to_disk(str(staging / "passages"))
        index = faiss.IndexFlatIP(kb.dim)
        index.add(embeddings)
        faiss.write_index(index, str(staging / "index.faiss"))
        shutil.copy(kb.directory / "manifest.json", staging / EXPORT_MANIFEST)
    return passages_dir, index_path
