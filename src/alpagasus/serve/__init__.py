"""`alpagasus serve`: an OpenAI-compatible server over a local causal LM, with the Files and Batches endpoints.

`app.py`: the model runner, the HTTP handler, `serve` (the command) and `start_server` (in-process, for tests
and benchmarks); `files.py`: uploaded and written files in a folder, the batch input format; `batches.py`: batches
run in the background, and the faults the server can inject into them (`BatchFaults`).
"""
from alpagasus.serve.app import ModelRunner, chat_completion, make_handler, serve, start_server
from alpagasus.serve.batches import BatchFaults, BatchManager
from alpagasus.serve.files import ApiError, FileStore, read_requests

__all__ = ["ApiError", "BatchFaults", "BatchManager", "FileStore", "ModelRunner", "chat_completion", "make_handler",
           "read_requests", "serve", "start_server"]
