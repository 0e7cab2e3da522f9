"""Training: the LoRA-tuned ranker (`ranker`) and the fusion weights chosen on validation
(`fusion`). Above the recommender: they train what it serves. The sequential retriever trains
inside the index build (`promptrec.retrieval.sasrec`), since building an index needs it."""
