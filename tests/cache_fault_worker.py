"""Run by test_decoding_cache_faults: the constructions that read damaged files, in a process of their own.

A damaged file that reached hnswlib could crash the process (SIGSEGV); here that fails the
test instead of killing pytest. Prints one JSON line per case, flushed, so the parent knows
which case was running if the process dies.

Usage: python cache_fault_worker.py SPEC_JSON
"""

from __future__ import annotations

import json
import sys
import warnings

import torch

from lightning_contloss.decoding import HNSWDecoder
from lightning_contloss.decoding.cache import CacheEntryWarning


def table(seed: int) -> torch.Tensor:
    return torch.randn(300, 8, generator=torch.Generator().manual_seed(seed))


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    queries = table(spec["query_seed"])[:40]
    own = table(spec["table_seed"])
    for case in spec["cache_cases"]:
        print(json.dumps({"case": case["name"], "started": True}), flush=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dec = HNSWDecoder(own, cache_dir=case["cache_dir"], num_threads=1)
            again = HNSWDecoder(own, cache_dir=case["cache_dir"], num_threads=1)
        result = {
            "case": case["name"],
            "from_cache": dec.from_cache,
            "repaired": again.from_cache,
            "warnings": [str(w.message) for w in caught if issubclass(w.category, CacheEntryWarning)],
            "ids": dec.query(queries, 3)[0].tolist(),
            "again_ids": again.query(queries, 3)[0].tolist(),
        }
        print(json.dumps(result), flush=True)
    for case in spec["load_cases"]:
        print(json.dumps({"case": case["name"], "started": True}), flush=True)
        try:
            HNSWDecoder.load(case["folder"])
            result = {"case": case["name"], "error": None}
        except Exception as err:
            result = {"case": case["name"], "error": type(err).__name__, "value_error": isinstance(err, ValueError)}
            result["message"] = str(err)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
