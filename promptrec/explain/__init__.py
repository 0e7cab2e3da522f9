"""Why this item? Grounded, conversational explanations of one user's recommendations.

`explain(rec, user, item)` returns a `Conversation` whose ``explanation`` holds the answer,
the evidence it rests on (real history items, shared attributes, the item's scores) and
whether the grounding check passed; ``ask(question)`` continues the dialogue.
"""

from promptrec.explain.conversation import (
    Conversation,
    ConversationState,
    Explanation,
    QuestionError,
    StreamEvent,
    Suggestion,
    explain,
)
from promptrec.explain.evidence import Evidence, ItemScores, RelatedItem, SharedAttribute, build_evidence
from promptrec.explain.faithfulness import Faithfulness, ItemPlace, measure_faithfulness
from promptrec.explain.grounding import GroundingCheck, TitleIndex, TitleMention

__all__ = [
    "Conversation",
    "ConversationState",
    "Evidence",
    "Explanation",
    "Faithfulness",
    "GroundingCheck",
    "ItemPlace",
    "ItemScores",
    "QuestionError",
    "RelatedItem",
    "SharedAttribute",
    "StreamEvent",
    "Suggestion",
    "TitleIndex",
    "TitleMention",
    "build_evidence",
    "explain",
    "measure_faithfulness",
]
