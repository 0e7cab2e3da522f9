"""Retrieval: item vectors in Chroma, behaviour and sequential sources, fusion."""

from promptrec.retrieval.fusion import reciprocal_rank_fusion
from promptrec.retrieval.index import RetrievalIndex
from promptrec.retrieval.retriever import Retriever
from promptrec.retrieval.schema import Candidate, CandidateList

__all__ = ["Candidate", "CandidateList", "RetrievalIndex", "Retriever", "reciprocal_rank_fusion"]
