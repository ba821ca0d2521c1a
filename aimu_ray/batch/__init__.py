"""Batch jobs, two ways: the JSONL runner (``run_batch``: one driver, a JSONL file in, a JSONL file out, a record
appended per line as it completes) and Ray Data (``processor``: a dataset in, the same rows with their answers
out, on an actor pool that hosts the model; ``run_dataset``: Parquet or JSONL files or folders, local or remote,
into an output folder). ``aimu-ray batch`` picks one by its input.

Input, one JSON object per line or one row per request (``id`` defaults to the line number, as a string, in
JSONL; a dataset's rows need an ``id`` column to resume)::

    text:  {"id": "q1", "prompt": "…"}  or  {"messages": [{"role": "user", "content": "…"}]}
           optional: "system", "generate_kwargs", "thinking", "tools" (OpenAI tool dicts)
    image: {"prompt": "…", "num_images", "negative_prompt", "width", "height", "num_inference_steps",
            "guidance_scale", "seed"}
    audio: {"prompt": "…", "num_audio", "duration_s", "num_inference_steps", "seed"}

Output, one record per input line, in completion order (a dataset's rows keep their columns and gain the same
fields as typed columns, ``rows.RESULT_FIELDS``)::

    {"id": "q1", "line": 1, "ok": true, "output": "…", "thinking": …, "usage": {…}, "stop_reason": "stop",
     "tool_calls": […], "elapsed_s": 0.41}
    {"id": "i1", "line": 2, "ok": true, "output": ["/abs/out_files/i1-0.png"], "elapsed_s": 1.2}   (image, audio)
    {"id": "q3", "line": 3, "ok": false, "error": {"type": "InvalidLine", "message": "line 3 is not JSON: …"}}
    {"id": "q4", "line": 4, "ok": false, "error": {"type": "RateLimitError", "message": "…"}, "elapsed_s": 9.1}

The output is also the job's log: a rerun after a kill skips every id recorded there (and cuts a torn last line,
or deletes a torn data file), so no line is lost or repeated.
"""

from .data_processor import Processor, ProcessorConfig, processor
from .datasets import run_dataset
from .lines import AudioLine, BatchLine, DuplicateIdError, ImageLine, TextLine
from .output import LineError, LineRecord, OutputFileError
from .runner import BatchInterrupted, BatchSummary, process_file, run_batch, run_batch_sync

__all__ = ["AudioLine", "BatchInterrupted", "BatchLine", "BatchSummary", "DuplicateIdError", "ImageLine",
           "LineError", "LineRecord", "OutputFileError", "Processor", "ProcessorConfig", "TextLine", "process_file",
           "processor", "run_batch", "run_batch_sync", "run_dataset"]
