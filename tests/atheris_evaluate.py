"""Coverage-guided fuzzing of the per-file function with atheris (libFuzzer), for `make fuzz`.

    python tests/atheris_evaluate.py [libFuzzer flags, e.g. -max_total_time=120 corpus/]

The properties are those of tests/test_fuzz_worker.py: a verdict for every input; accepted
means the blob decompresses to the input, the hash is its SHA-256 and orjson (what a consumer
uses) reads it; rejected means a code from REASONS and one printable line. A violation raises,
and libFuzzer saves the input as crash-<sha1>.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import orjson
    import zstandard

    from assetmgr.limits import Limits
    from assetmgr.messages import REASONS, Accepted
    from assetmgr.pipeline import schemas
    from assetmgr.pipeline.worker import evaluate

REPO = Path(__file__).resolve().parent.parent
REGISTRY = schemas.load(REPO / "schemas")
LIMITS = (Limits(), Limits(max_depth=4))
PATHS = ("settings.json", "weights/cost.json", "cards/core/x.json", "routes/api.json")
DECOMPRESS = zstandard.ZstdDecompressor()


def one_input(raw: bytes) -> None:
    provider = atheris.FuzzedDataProvider(raw)
    path = PATHS[provider.ConsumeIntInRange(0, len(PATHS) - 1)]
    limits = LIMITS[provider.ConsumeIntInRange(0, 1)]
    data = provider.ConsumeBytes(provider.remaining_bytes())
    verdict = evaluate(path, data, REGISTRY, limits)
    if isinstance(verdict, Accepted):
        assert DECOMPRESS.decompress(verdict.blob) == data
        assert verdict.hash == hashlib.sha256(data).hexdigest()
        orjson.loads(data)
    else:
        assert verdict.code in REASONS, verdict
        assert verdict.reason and verdict.reason.isprintable(), verdict


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
