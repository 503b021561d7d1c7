"""ONNX Runtime provider plumbing that needs no GPU: catching the native log's CPU-fallback warnings."""

from __future__ import annotations

import os

from backends.onnxruntime.providers import captured_stderr, fallback_warnings

# The line ONNX Runtime's C++ logger writes when a GPU provider leaves nodes to the CPU (1.2x/1.3x wording).
WARNING = ("2026-11-26 10:00:00.000 [W:onnxruntime:, session_state.cc:1280 VerifyEachNodeIsAssignedToAnEp] Some "
           "nodes were not assigned to the preferred execution providers which may or may not have an negative "
           "impact on performance. e.g. ORT explicitly assigns shape related ops to CPU to improve perf.")


def test_native_stderr_is_captured_and_passed_on(capfd):
    with captured_stderr() as lines:
        os.write(2, (WARNING + "\n").encode())  # what C++ code does: straight to file descriptor 2
        os.write(2, b"2026-11-26 [I:onnxruntime:] nothing to see\n")
    assert lines[0] == WARNING and len(lines) == 2
    assert WARNING in capfd.readouterr().err  # still reaches the worker log
    found = fallback_warnings(lines)
    assert found == [WARNING.split("] ", 1)[1]]
    assert fallback_warnings(["[I:onnxruntime:] session created"]) == []
