"""Progress of the long GGUF steps reaches the reporter, and the console draws it
only on a terminal."""

from __future__ import annotations

import io

from hubquant.pipeline import JobRequest, run_job
from hubquant.progress import ConsoleReporter, Reporter


class Recorder(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, float, float | None]] = []

    def on_progress(self, label: str, done: float, total: float | None) -> None:
        self.events.append((label, done, total))


def _series(events, label):
    return [(done, total) for name, done, total in events if name == label]


def test_convert_and_quantize_report_progress(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    recorder = Recorder()
    result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0", "gguf:Q4_K_M"], output_dir=tmp_path), recorder)
    assert result.ok

    # The converter's bytes written, ending at its total (the intermediate's tensor data).
    convert = _series(recorder.events, "convert to BF16")
    assert convert, recorder.events
    assert [done for done, _ in convert] == sorted(done for done, _ in convert)
    assert convert[-1][0] == convert[-1][1] > 10e6

    # One step per tensor for each type, from the quantizer's own count.
    for label in ("quantize Q8_0", "quantize Q4_K_M"):
        series = _series(recorder.events, label)
        dones = [done for done, _ in series]
        totals = {total for _, total in series}
        assert totals == {15}, series  # 2 layers x 6 tensors + embeddings, output, final norm
        assert dones[0] == 0 and dones[-1] == 15
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
