"""Prefix KV-cache reuse vs separate full passes, and per-strategy rerank latency, in one run.

    python benchmarks/kv_reuse.py [--model NAME_OR_FOLDER] [--dtype bfloat16] [--repeats 3] [--threads N]

20 MovieLens-style candidates and a 10-item history. For each strategy it times
`LLMReranker.run` with the backend's prefix reuse on and off (same inputs, interleaved,
median of --repeats), prints the speed ratio and the largest score difference between the
two. Two-thread CPU timings swing between runs: read the ratios, not the absolute times.
On a shared, busy machine ``--threads 1`` avoids OpenMP threads waiting on each other, and
the process CPU time (also printed) is steadier than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from promptrec.config import Settings
from promptrec.data.schema import Item
from promptrec.ranker.backends.transformers_backend import TransformersBackend
from promptrec.ranker.reranker import LLMReranker
from promptrec.retrieval.schema import Candidate, CandidateList

HISTORY = [
    Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy")),
    Item(item_id="50", title="Star Wars", year=1977, genres=("Action", "Adventure", "Sci-Fi", "War")),
    Item(item_id="181", title="Return of the Jedi", year=1983, genres=("Action", "Adventure", "Sci-Fi")),
    Item(item_id="172", title="Empire Strikes Back, The", year=1980, genres=("Action", "Adventure", "Sci-Fi")),
    Item(item_id="174", title="Raiders of the Lost Ark", year=1981, genres=("Action", "Adventure")),
    Item(item_id="210", title="Indiana Jones and the Last Crusade", year=1989, genres=("Action", "Adventure")),
    Item(item_id="82", title="Jurassic Park", year=1993, genres=("Action", "Adventure", "Sci-Fi")),
    Item(item_id="195", title="Terminator, The", year=1984, genres=("Action", "Sci-Fi", "Thriller")),
    Item(item_id="96", title="Terminator 2: Judgment Day", year=1991, genres=("Action", "Sci-Fi", "Thriller")),
    Item(item_id="121", title="Independence Day (ID4)", year=1996, genres=("Action", "Sci-Fi", "War")),
]

CANDIDATES = [
    ("222", "Star Trek: First Contact", 1996, ("Action", "Adventure", "Sci-Fi")),
    ("228", "Star Trek: The Wrath of Khan", 1982, ("Action", "Adventure", "Sci-Fi")),
    ("89", "Blade Runner", 1982, ("Film-Noir", "Sci-Fi")),
    ("271", "Starship Troopers", 1997, ("Action", "Adventure", "Sci-Fi", "War")),
    ("405", "Mission: Impossible", 1996, ("Action", "Adventure", "Mystery")),
    ("384", "Naked Gun 33 1/3: The Final Insult", 1994, ("Comedy",)),
    ("100", "Fargo", 1996, ("Crime", "Drama", "Thriller")),
    ("127", "Godfather, The", 1972, ("Action", "Crime", "Drama")),
    ("98", "Silence of the Lambs, The", 1991, ("Drama", "Thriller")),
    ("28", "Apollo 13", 1995, ("Action", "Drama", "Thriller")),
    ("7", "Twelve Monkeys", 1995, ("Drama", "Sci-Fi")),
    ("117", "Rock, The", 1996, ("Action", "Adventure", "Thriller")),
    ("69", "Forrest Gump", 1994, ("Comedy", "Romance", "War")),
    ("143", "Sound of Music, The", 1965, ("Musical",)),
    ("71", "Lion King, The", 1994, ("Animation", "Children's", "Musical")),
    ("204", "Back to the Future", 1985, ("Comedy", "Sci-Fi")),
    ("423", "E.T. the Extra-Terrestrial", 1982, ("Children's", "Drama", "Fantasy", "Sci-Fi")),
    ("161", "Top Gun", 1986, ("Action", "Romance")),
    ("265", "Hunt for Red October, The", 1990, ("Action", "Thriller")),
    ("313", "Titanic", 1997, ("Action", "Drama", "Romance")),
]


def candidate_list() -> CandidateList:
    cands = []
    for rank, (item_id, title, year, genres) in enumerate(CANDIDATES, start=1):
        item = Item(item_id=item_id, title=title, year=year, genres=genres)
        cands.append(
            Candidate(item_id=item_id, title=item.display_title(), text=item.text(),
                      fused_score=1.0 / (rank + 10), rank=rank, popularity=400 - 15 * rank)
        )
    return CandidateList(user_id="bench", candidates=cands, history=[h.item_id for h in HISTORY])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name or model folder")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strategies", default="letters,likelihood,yesno")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from promptrec.assets import resolve_model

    path = resolve_model(args.model, Settings())
    backend = TransformersBackend(path, model_id=args.model, dtype=args.dtype, device="auto")
    cands = candidate_list()
    import torch

    print(f"model {args.model} ({backend.device}, {args.dtype}, {torch.get_num_threads()} threads); "
          f"{len(cands.candidates)} candidates, {len(HISTORY)} history items; median of {args.repeats}")
    print(f"{'strategy':<11} {'prompts':>7} {'tokens':>7} {'reuse s':>8} {'full s':>8} {'speedup':>8} "
          f"{'reuse cpu':>9} {'full cpu':>9} {'cpu ratio':>9} {'max |diff|':>11}")
    for name in args.strategies.split(","):
        reranker = LLMReranker(backend, name, timeout_s=None)
        reranker.run(HISTORY, cands)  # warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        scores: dict[bool, np.ndarray] = {}
        result = None
        for _ in range(args.repeats):
            for reuse in (True, False):
                backend.reuse_prefix = reuse
                started, cpu_started = time.perf_counter(), time.process_time()
                result = reranker.run(HISTORY, cands)
                times[reuse].append(time.perf_counter() - started)
                cpu[reuse].append(time.process_time() - cpu_started)
                assert not result.degraded, result.degraded_reason
                scores[reuse] = np.asarray(result.scores_in_input_order())
        backend.reuse_prefix = True
        t_reuse, t_full = statistics.median(times[True]), statistics.median(times[False])
        c_reuse, c_full = statistics.median(cpu[True]), statistics.median(cpu[False])
        diff = float(np.abs(scores[True] - scores[False]).max())
        assert result is not None
        print(f"{name:<11} {result.n_prompts:>7} {result.prompt_tokens:>7} {t_reuse:>8.3f} {t_full:>8.3f} "
              f"{t_full / t_reuse:>7.2f}x {c_reuse:>9.2f} {c_full:>9.2f} {c_full / c_reuse:>8.2f}x {diff:>11.2e}")


if __name__ == "__main__":
    main()
