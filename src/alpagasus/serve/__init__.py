"""`alpagasus serve`: an OpenAI-compatible server over a local causal LM, with the Files and Batches endpoints.

`app.py`: the HTTP handler, `serve` (the command) and `start_server` (in-process, for tests and benchmarks);
`runner.py`: the model, chat requests checked and run in dynamic batches, work of departed clients dropped;
`security.py`: the API key, Host and Origin checks; `upload.py`: bounded bodies, streamed uploads;
`server.py`: the HTTP server with a bounded pool of handler threads; `files.py`: uploaded and written files in a
folder, the batch input format (read line by line); `batches.py`: batches run in the background, and the faults
the server can inject into them (`BatchFaults`); `batchlog.py`: batches on disk, resumed after a restart.
"""

from alpagasus.serve.app import make_handler, serve, start_server
from alpagasus.serve.batches import BatchFaults, BatchManager
from alpagasus.serve.files import ApiError, FileStore, iter_requests, read_requests
from alpagasus.serve.runner import ChatParams, ClientGone, ModelRunner, RunnerStats, chat_completion, parse_chat
from alpagasus.serve.security import KEY_ENV, Guard

__all__ = [
    "ApiError",
    "BatchFaults",
    "BatchManager",
    "ChatParams",
    "ClientGone",
    "FileStore",
    "Guard",
    "KEY_ENV",
    "ModelRunner",
    "RunnerStats",
    "chat_completion",
    "iter_requests",
    "make_handler",
    "parse_chat",
    "read_requests",
    "serve",
    "start_server",
]
