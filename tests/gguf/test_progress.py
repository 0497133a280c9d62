"""Progress of the long steps (download, conversion, quantization, upload)
reaches the reporter, and the console draws it only on a terminal."""

from __future__ import annotations

import io

from hubquant.pipeline import JobRequest, run_job
from hubquant.progress import ConsoleReporter, Reporter
from hubquant.tinymodels import publish_tiny_model


class Recorder(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, float, float | None]] = []

    def on_progress(self, label: str, done: float, total: float | None) -> None:
        self.events.append((label, done, total))


def _series(events, label):
    return [(done, total) for name, done, total in events if name == label]


def test_download_convert_and_quantize_report_progress(hub, alice, tiny_model, tmp_path):
    repo_id = "alice/Phi-3-mini-4k-progress"
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=repo_id, cache=tiny_model)
    recorder = Recorder()
    request = JobRequest(
        source=repo_id, targets=["gguf:Q8_0", "gguf:Q4_K_M"], endpoint=hub.url, token=alice.token, push=True,
        repo_name="Phi-3-mini-4k-progress-release",
    )
    result = run_job(request, recorder)
    assert result.ok

    # The bytes downloaded, ending at the weights and the other files' sum.
    download = _series(recorder.events, f"download {repo_id}")
    assert download, recorder.events
    weights = alice.get_paths_info(repo_id, ["model.safetensors"])[0].size
    assert download[-1][0] == download[-1][1] > weights
    assert [done for done, _ in download] == sorted(done for done, _ in download)

    # The converter's bytes written, ending at its total (the intermediate's tensor data).
    convert = _series(recorder.events, "convert to BF16")
    assert convert, recorder.events
    assert [done for done, _ in convert] == sorted(done for done, _ in convert)
    assert convert[-1][0] == convert[-1][1] > 10e6

    # One step per tensor for each type, from the quantizer's own count.
    # The upload of each file, from 0 to its size.
    release = result.releases[0]
    sizes = {info.path: info.size for info in alice.get_paths_info(release.repo_id, release.files)}
    for target in ("Q8_0", "Q4_K_M"):
        upload = _series(recorder.events, f"publish gguf:{target}")
        size = next(size for name, size in sizes.items() if name.endswith(f"-{target}.gguf"))
        assert upload == [(0, size), (size, size)], upload

    for label in ("quantize Q8_0", "quantize Q4_K_M"):
        series = _series(recorder.events, label)
        dones = [done for done, _ in series]
        totals = {total for _, total in series}
        assert totals == {15}, series  # 2 layers x 6 tensors + embeddings, output, final norm
        assert dones[0] == 0
        assert dones[-1] == 15
        assert dones == sorted(dones)


def test_console_draws_a_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe, quiet = Terminal(), io.StringIO(), Terminal()
    for stream, reporter in (
        (terminal, ConsoleReporter(stream=terminal)),
        (pipe, ConsoleReporter(stream=pipe)),
        (quiet, ConsoleReporter(stream=quiet, quiet=True)),
    ):
        reporter.progress("quantize Q8_0", 3, 15)
        reporter.progress("quantize Q8_0", 15, 15)
        reporter.message("next")
    assert "\rquantize Q8_0 [######------------------------]  20.0%" in terminal.getvalue()
    assert "100.0%\n" in terminal.getvalue()
    assert terminal.getvalue().endswith("next\n")
    assert pipe.getvalue() == "next\n"
    assert quiet.getvalue() == ""
