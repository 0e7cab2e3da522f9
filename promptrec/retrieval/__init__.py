"""Retrieval: item vectors in Chroma, behaviour and sequential sources, fusion."""

from typing import TYPE_CHECKING

from promptrec.lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.retrieval.fusion import reciprocal_rank_fusion
    from promptrec.retrieval.index import RetrievalIndex
    from promptrec.retrieval.retriever import Retriever
    from promptrec.retrieval.schema import Candidate, CandidateList

__all__ = ["Candidate", "CandidateList", "RetrievalIndex", "Retriever", "reciprocal_rank_fusion"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "reciprocal_rank_fusion": "promptrec.retrieval.fusion",
    "RetrievalIndex": "promptrec.retrieval.index",
    "Retriever": "promptrec.retrieval.retriever",
    "Candidate": "promptrec.retrieval.schema",
    "CandidateList": "promptrec.retrieval.schema",
})
