"""The embedded corpus: the shortened English Wikipedia dump that gensim ships as test data.

106 articles (Anarchism, Autism, Abraham Lincoln, Apollo 11, ...), 480k words, about 4,800
passages of 100 words. Article text is Wikipedia's (CC BY-SA 3.0, GFDL); ragloom credits it
wherever it shows it.
"""

from __future__ import annotations

import bz2
import re
from collections.abc import Iterator
from pathlib import Path

from ..assets import package_directory
from .documents import Document

DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
CREDIT = (
    "Passages: English Wikipedia (a 106-article sample shipped with gensim), "
    "CC BY-SA 3.0 / GFDL, https://en.wikipedia.org"
)


def dump_path() -> Path:
    return package_directory("gensim", "gensim") / "test" / "test_data" / DUMP


def _plain(markup: str) -> str:
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(markup).replace("'''", "").replace("''", "")
    return re.sub(r"\s+", " ", text).strip()


def wikipedia_documents() -> Iterator[Document]:
    """One document per article (redirects and other namespaces left out), as plain text."""
    from gensim.corpora.wikicorpus import extract_pages

    with bz2.BZ2File(dump_path()) as dump:
        for title, markup, page_id in extract_pages(dump):
            if markup.lstrip().lower().startswith("#redirect"):
                continue
            text = _plain(markup)
            if text:
                yield Document(title, text, str(page_id))
