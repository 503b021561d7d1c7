"""`check` is a request (`arena.judging.check.CheckRequest`): the CLI's flags and /check's parameters (MCP's tool
is read from /check's signature) come from its declared fields, with the same names and defaults; a bad value is
the same sentence in both; public mode refuses what it refused before the declaration. Nothing here runs a model:
the core is a stand-in that records the runs a check asks for (and, for the public gate, a real core whose gate
refuses before any work)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from arena.__main__ import build_parser, main, run_check
from arena.fields import api_signature
from arena.judging.check import CHECK_REACH, CheckRequest, check
from arena.public.policy import Policy, PublicLimits
from arena.types import BackendSpec
from ui.api import make_check

REQUIRED = ["--model", "smollm2-135m-instruct", "--candidate", "onnxruntime"]


@dataclass
class Recorder:
    """A core that records each run a check asks for and answers with an error (the check stops there)."""

    policy: Policy = field(default_factory=Policy.local)
    runs: list = field(default_factory=list)
    tolerances: list = field(default_factory=list)
    keep_reference_distributions: bool = False
    closed: bool = False

    def run_text_to_end(self, request, progress=None, cancel=None, tolerances=None):
        self.runs.append(request)
        self.tolerances.append(tolerances)
        return SimpleNamespace(error="recorded")

    run_image_to_end = run_text_to_end

    def stoppable(self, owner):
        import contextlib

        return contextlib.nullcontext(None)

    def public_view(self, data):
        return self.policy.redact(data)

    def close(self):
        self.closed = True


def check_subparser():
    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "check")[1]


def cli_request(*args: str, core: Recorder | None = None) -> tuple[int, Recorder]:
    """``python -m arena check`` in this process, on a recording core: (exit code, the core)."""
    core = core or Recorder()
    return run_check(build_parser().parse_args(["check", *REQUIRED, *args]), lambda: core), core


def test_api_and_cli_take_the_same_parameters_with_the_same_defaults():
    api = inspect.signature(make_check(None)).parameters
    cli = {a.dest: a for a in check_subparser()._actions if a.option_strings and a.dest not in ("help", "json",
                                                                                               "cache_dir")}
    declared = [info.name for info in CheckRequest.fields()]
    assert [name for name in api if name != "request"] == [p.name for p in api_signature(CheckRequest)]
    assert set(api) - {"request"} == set(cli) == set(declared), (sorted(api), sorted(cli))
    assert {"steps", "seed", "localize", "reach", "max_new_tokens"} <= set(api)  # the CLI's own flags, on /check
    assert api["max_new_tokens"].default == 48 == CheckRequest.field("max_new_tokens").default
    assert api["reach"].default == CHECK_REACH and api["localize"].default == "auto"
    assert [api[name].default for name in ("model", "candidate")] == [inspect.Parameter.empty] * 2
    assert cli["model"].required and cli["candidate"].required and cli["prompts"].option_strings == ["--prompt"]
    # The request each front end makes of the same nothing-but-the-required call is the same: the defaults.
    _code, core = cli_request()
    make_check(api_core := Recorder())(model="smollm2-135m-instruct", candidate="onnxruntime")
    (from_cli,), (from_api,) = core.runs, api_core.runs
    assert from_cli == from_api and from_cli.max_new_tokens == 48 and from_cli.reach == CHECK_REACH
    assert from_cli.localize == "auto" and from_cli.backends == (BackendSpec("pytorch"), BackendSpec("onnxruntime"))


def test_the_new_api_parameters_reach_the_runs():
    core = Recorder()
    make_check(core)(model="scenes-64", candidate="onnxruntime", steps=3, seed=7, localize="all", prompts=["a"])
    run = core.runs[0]
    assert (run.steps, run.seed, run.localize, run.prompt) == (3, 7, "all", "a")
    make_check(core)(model="smollm2-135m-instruct", candidate="onnxruntime", localize="off", reach=768,
                     max_new_tokens=8, reference={"backend": "pytorch", "precision": "bf16"})
    run = core.runs[1]
    assert (run.localize, run.reach, run.max_new_tokens, run.backends[0].precision) == ("off", 768, 8, "bf16")


def test_tolerances_reach_the_judge_alike_from_the_cli_and_the_api():
    """Polygraphy's --atol/--rtol: one value for every precision class, or PRECISION:VALUE, comma-separated; the
    CLI and /check give the judge the same overrides; a bad one (or another task's) is refused before any run."""
    _code, from_cli = cli_request("--prompt", "a", "--atol", "fp16:0.5, 0.1", "--rtol", "0.02", "--json")
    make_check(from_api := Recorder())(model="smollm2-135m-instruct", candidate="onnxruntime", prompts=["a"],
                                       atol="fp16:0.5,0.1", rtol="0.02")
    expected = {"atol": {"fp16": "0.5", "": "0.1"}, "rtol": {"": "0.02"}}
    assert from_cli.tolerances == from_api.tolerances == [expected]
    for values, sentence in (({"atol": "fp16:lots"}, "Tolerances: tolerance atol: 'lots' is not a number."),
                             ({"atol": "fp64:0.1"}, "'fp64' is not a precision class"),
                             ({"min_psnr": "30"}, "min_psnr judges image checks, not this text check"),
                             ({"rtol": "0.1," * 1000}, "at most 200 characters")):
        core = Recorder()
        report = make_check(core)(model="smollm2-135m-instruct", candidate="onnxruntime", **values)
        assert report["broken"] and sentence in report["error"] and core.runs == [], report["error"]


@pytest.mark.parametrize("flags, localize", [((), "auto"), (("--localize",), "all"), (("--localize", "off"), "off"),
                                             (("--localize", "all"), "all")])
def test_a_bare_localize_flag_still_means_every_candidate(flags, localize):
    _code, core = cli_request("--prompt", "a", *flags, "--json")
    assert core.runs[0].localize == localize and core.closed


def test_the_old_keyword_call_still_works():
    core = Recorder()
    report = check(core, "smollm2-135m-instruct", BackendSpec("onnxruntime"), prompts=("a",), max_new_tokens=8,
                   localize=True, reach=0)
    assert report["error"] == "recorded" and report["broken"]
    assert (core.runs[0].localize, core.runs[0].max_new_tokens, core.runs[0].reach) == ("all", 8, 0)


@pytest.mark.parametrize("name, value, sentence", [
    ("max_new_tokens", "0", "Max new tokens must be between 1 and 4096, not 0."),
    ("max_new_tokens", "lots", "Max new tokens takes a whole number, not 'lots'."),
    ("reach", "-1", "Long reach (positions) must be between 0 and 131072, not -1."),
    ("steps", "0", "Steps must be between 1 and 200, not 0."),
    ("seed", "-1", "Seed must be between 0 and"),
    ("task", "zzz", "Task takes one of auto, text, image, not 'zzz'."),
    ("localize", "sometimes", "Where did it break? takes one of auto, all, off, not 'sometimes'."),
])
def test_a_bad_value_is_the_same_sentence_in_the_api_and_the_cli(name, value, sentence, capsys):
    core = Recorder()
    report = make_check(core)(model="smollm2-135m-instruct", candidate="onnxruntime", **{name: value})
    assert report["broken"] and sentence in report["error"] and not report["checks"], report
    flag = "--" + name.replace("_", "-")
    try:
        code = main(["check", *REQUIRED, flag, value])
    except SystemExit as exc:  # a value of the wrong kind: argparse's exit, with the field's sentence
        code = exc.code
    assert code == 2 and sentence in capsys.readouterr().err
    assert core.runs == []  # refused before any run


def test_odd_api_values_are_sentences():
    api = make_check(Recorder())
    for values, words in (({"model": 123}, "The model is a catalog key"), ({"prompts": "not a list"}, "list of texts"),
                          ({"candidate": None}, "The candidate is a backend"), ({"candidate": "tensorflow"},
                                                                               "Unknown backend 'tensorflow'")):
        report = api(**({"model": "smollm2-135m-instruct", "candidate": "onnxruntime"} | values))
        assert report["broken"] and words in report["error"] and report["error"].endswith("."), report


def public_core() -> Recorder:
    return Recorder(policy=Policy(public=True, limits=PublicLimits(), token_available=lambda: False))


@pytest.mark.parametrize("values, sentence", [
    ({"prompts": ["hi"] * 200}, "A check takes up to 5 prompts on this public server (asked: 200)."),
    ({"prompts": ["x" * 3000]}, "The prompt's length is capped at 2000 characters on this public server "
                                "(asked: 3000)."),
    ({"max_new_tokens": 4096}, "Max new tokens is capped at 256 on this public server (asked: 4096)."),
    ({"steps": 500}, "Steps are capped at 50 on this public server (asked: 500)."),
])
def test_public_mode_refuses_a_checks_caps_before_any_run(values, sentence):
    core = public_core()
    report = make_check(core)(model="smollm2-135m-instruct", candidate="onnxruntime", **values)
    assert report["error"] == sentence and core.runs == [], report


def test_public_mode_cuts_the_long_reach_and_runs_the_rest():
    core = public_core()
    make_check(core)(model="smollm2-135m-instruct", candidate="onnxruntime", localize="all")
    assert core.runs[0].reach == 2048 and core.runs[0].localize == "all"  # the default 4,096, cut: not refused


def test_public_mode_opens_no_path_a_check_names(tmp_path):
    """The real core's gate: a local folder as the model, or a candidate's onnx_dir, is refused before any work."""
    from arena.core import Arena

    arena = Arena(cache_dir=tmp_path / "cache", policy=Policy(public=True, token_available=lambda: False))
    try:
        api = make_check(arena)
        report = api(model=str(tmp_path), candidate="onnxruntime", prompts=["hi"])
        assert report["broken"] and "does not open paths" in report["error"], report
        report = api(model="smollm2-135m-instruct", candidate={"backend": "onnxruntime", "onnx_dir": str(tmp_path)},
                     prompts=["hi"])
        assert report["broken"] and "onnx_dir" in report["error"] and "path" in report["error"], report
        assert arena.worker_pids() == {}
    finally:
        arena.close()
