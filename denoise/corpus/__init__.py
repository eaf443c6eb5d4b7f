"""Denoise a corpus on a Ray cluster: inputs and outputs local or on object storage, one manifest row per input.

The same engine as ``denoise run`` (``Denoiser.enhance_file``), spread over Ray Data actors that each load
the model once. Ray, fsspec/s3fs and pyarrow are the optional ``cluster`` extra and are imported only when
a corpus runs. Modules: :mod:`.storage` (listing, URLs, intact outputs), :mod:`.records` (manifest rows,
settings hash, resume rule), :mod:`.worker` (one file on one actor), :mod:`.driver` (the Ray Data run).
"""

from denoise.corpus.driver import CorpusOptions, CorpusSummary, run_corpus
from denoise.corpus.storage import CorpusError

__all__ = ["CorpusError", "CorpusOptions", "CorpusSummary", "run_corpus"]
