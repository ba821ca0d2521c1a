"""Batch jobs: JSONL in, JSONL out, for ``ray job submit -- aimu-ray batch --model … --input … --output …``.

Input, one JSON object per line (blank lines are skipped; ``id`` defaults to the line number, as a string)::

    text:  {"id": "q1", "prompt": "…"}  or  {"messages": [{"role": "user", "content": "…"}]}
           optional: "system", "generate_kwargs", "thinking", "tools" (OpenAI tool dicts)
    image: {"prompt": "…", "num_images", "negative_prompt", "width", "height", "num_inference_steps",
            "guidance_scale", "seed"}
    audio: {"prompt": "…", "num_audio", "duration_s", "num_inference_steps", "seed"}

Output, one record per input line, in completion order::

    {"id": "q1", "line": 1, "ok": true, "output": "…", "thinking": …, "usage": {…}, "stop_reason": "stop",
     "tool_calls": […], "elapsed_s": 0.41}
    {"id": "i1", "line": 2, "ok": true, "output": ["/abs/out_files/….png"], "elapsed_s": 1.2}   (image, audio)
    {"id": "q3", "line": 3, "ok": false, "error": {"type": "InvalidLine", "message": "line 3 is not JSON: …"}}
    {"id": "q4", "line": 4, "ok": false, "error": {"type": "RateLimitError", "message": "…"}, "elapsed_s": 9.1}

The output file is also the job's log: a rerun after a kill skips every id recorded there and cuts a torn
last line, so no line is lost or repeated.
"""

from .lines import AudioLine, BatchLine, DuplicateIdError, ImageLine, TextLine
from .output import LineError, LineRecord, OutputFileError
from .runner import BatchInterrupted, BatchSummary, process_file, run_batch, run_batch_sync

__all__ = ["AudioLine", "BatchInterrupted", "BatchLine", "BatchSummary", "DuplicateIdError", "ImageLine",
           "LineError", "LineRecord", "OutputFileError", "TextLine", "process_file", "run_batch", "run_batch_sync"]
