#!/usr/bin/env bash
# Replay a Hugging Face Space's build of this repo (Gradio SDK, CPU) on this machine and say plainly what was
# verified and what was not.
#   scripts/space_check.sh                     full: resolve, install into a fresh venv, start app.py from a clone of
#                                              the committed HEAD with SPACE_ID set, call /compare_text and
#                                              /compare_image through gradio_client; exit 0 only if every verdict
#                                              is MATCH
#   scripts/space_check.sh --resolve-only      pip's resolution only (pip install --dry-run --report), ~1 minute
#   scripts/space_check.sh --zerogpu           the ZeroGPU variant's resolution: requirements-zerogpu.txt as the
#                                              Space's requirements.txt, Python 3.12 (ZeroGPU's), torch's CUDA build
#   options: --report FILE (keep pip's resolution report), --keep (keep the temporary folder)
# Like a Space: an empty folder holding a copy of requirements.txt alone, a fresh venv of README's python_version,
# the Space's own install line (read from Space build logs; docs/space-build.md):
#   pip install -r requirements.txt "gradio[oauth,mcp]==<README's sdk_version>" "uvicorn>=0.14.0" "websockets>=10.4" spaces
# with this machine's pip configuration (local wheel folders, constraints) switched off: PyPI and the file's own
# indexes only.
# Everything printed also goes to artifacts/space-check.log ($SPACE_CHECK_LOG).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

mode=full
keep=0
zerogpu=0
report_copy=
while [ $# -gt 0 ]; do
  case $1 in
    --resolve-only) mode=resolve ;;
    --zerogpu) mode=resolve; zerogpu=1 ;;
    --keep) keep=1 ;;
    --report) report_copy=$(realpath -m "$2"); shift ;;
    *) echo "space_check: unknown option $1 (use --resolve-only, --zerogpu, --report FILE, --keep)" >&2; exit 2 ;;
  esac
  shift
done

log=${SPACE_CHECK_LOG:-$repo/artifacts/space-check.log}
mkdir -p "$(dirname "$log")"
: > "$log"
exec > >(tee -a "$log") 2>&1

say() { echo "space_check: $*"; }
verified=()
not_verified=()
ok() { verified+=("$*"); say "VERIFIED: $*"; }
nv() { not_verified+=("$*"); say "NOT VERIFIED: $*"; }

front() {  # a key of README.md's front matter (the lines between the first two ---)
  sed -n "2,/^---\$/s/^$1:[[:space:]]*//p" "$repo/README.md" | tr -d "\"'[:space:]"
}
sdk=$(front sdk_version)
pyver=$(front python_version)
[ -n "$sdk" ] || { say "README.md's front matter has no sdk_version"; exit 1; }
python=python${pyver:-3.11}
source_requirements=requirements.txt
if [ $zerogpu = 1 ]; then
  # ZeroGPU accepts Python 3.12.12 or 3.10.13 (https://huggingface.co/docs/hub/spaces-zerogpu): the ZeroGPU Space's
  # front matter says 3.12.12 (scripts/space_history.sh --zerogpu); this replay takes any 3.12.
  pyver=3.12
  source_requirements=requirements-zerogpu.txt
  python=${SPACE_CHECK_PYTHON:-python3.12}
  if ! "$python" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    for candidate in "$(command -v pyenv >/dev/null && pyenv root)"/versions/3.12*/bin/python3.12; do
      [ -x "$candidate" ] && python=$candidate
    done
  fi
fi
command -v "$python" >/dev/null || { say "$python (the Space's python_version) is not installed here"; exit 1; }
# The Space's install line, after `-r requirements.txt` (gradio's extras and the servers' floors included).
space_extra=("gradio[oauth,mcp]==$sdk" "uvicorn>=0.14.0" "websockets>=10.4" spaces)
# Public ZeroGPU build logs show the line with a torch cap and an exact spaces pin as well ("torch<=2.13.0" ...
# spaces==0.51.3 in late 2026): replayed with that cap.
[ $zerogpu = 1 ] && space_extra+=("torch<=${SPACE_CHECK_TORCH_CAP:-2.13.0}")
space_line="pip install -r requirements.txt ${space_extra[*]}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/space-check.XXXXXX")
app_pid=
summary() {
  local rc=$?
  if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
    say "stopping the app (process group $app_pid)"
    kill -TERM -- "-$app_pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$app_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$app_pid" 2>/dev/null || true
  fi
  echo
  say "----- summary ($mode mode, exit $rc) -----"
  local line
  for line in "${verified[@]}"; do echo "  verified:     $line"; done
  for line in "${not_verified[@]}"; do echo "  NOT verified: $line"; done
  if [ $keep = 1 ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  say "log: $log"
}
trap summary EXIT

say "mode: $mode$([ $zerogpu = 1 ] && echo ' (ZeroGPU variant)'); gradio==$sdk from README.md's front matter, python $pyver$([ $zerogpu = 1 ] && echo " (ZeroGPU's)" || echo " (the front matter's)"); working folder $tmp"
build=$tmp/build
mkdir "$build"
cp "$repo/$source_requirements" "$build/requirements.txt"
[ $zerogpu = 1 ] && say "ZeroGPU variant: $source_requirements as the Space's requirements.txt, $python"
if ! git -C "$repo" diff --quiet HEAD -- "$source_requirements" 2>/dev/null; then
  say "note: $source_requirements has uncommitted changes; this check uses the working copy (a Space builds the committed one)"
fi

# A Space's pip sees PyPI and the file's own indexes only: no PIP_* variables, no pip configuration files.
pip_env=(env -u PYTHONPATH)
for var in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do pip_env+=(-u "$var"); done
pip_env+=(PIP_CONFIG_FILE=/dev/null)

say "fresh venv ($python) in $tmp/venv; pip upgraded from PyPI as the Space's image does"
"$python" -m venv "$tmp/venv"
vpy=$tmp/venv/bin/python
vpip() { "${pip_env[@]}" "$vpy" -m pip --disable-pip-version-check "$@"; }
vpip install -q --upgrade pip
say "$(vpip --version)"

# Indexes the file names that do not answer from here: what only they have comes from this machine's copy of the
# same wheel file, in a folder holding nothing else.
skipped=$("$python" "$repo/scripts/pip_indexes.py" "$build/requirements.txt" "$tmp/requirements.filtered.txt")
local_wheels=()
if [ -n "$skipped" ]; then
  mv "$tmp/requirements.filtered.txt" "$build/requirements.txt"
  mkdir "$tmp/local-wheels"
  # The pins only such an index can serve: local version labels (+cpu) are not allowed on PyPI.
  mapfile -t local_pins < <("$vpy" - "$repo/$source_requirements" <<'PY'
import re, sys
from pip._vendor.packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split(" #")[0].strip()
    if not line or line.startswith(("#", "-")):
        continue
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        continue
    for spec in req.specifier:
        if spec.operator == "==" and "+" in spec.version:
            print(f"{req.name}=={spec.version}")
PY
)
  while IFS=$'\t' read -r url why; do
    say "the index $url does not answer from here ($why)"
    for pin in "${local_pins[@]}"; do
      nv "$pin comes from $url on a Space: that index, and that it serves this version for Linux x86_64 $python, were not checked from here"
    done
  done <<< "$skipped"
  wheel_dirs=${SPACE_CHECK_WHEELS:-${PIP_FIND_LINKS:-/opt/wheels}}
  for pin in "${local_pins[@]}"; do
    found=$("$vpy" - "$pin" $wheel_dirs <<'PY'
import sys
from pathlib import Path
from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
name, version = sys.argv[1].split("==")
supported = set(sys_tags())
for folder in sys.argv[2:]:
    for wheel in sorted(Path(folder).glob("*.whl")):
        try:
            wname, wversion, _, tags = parse_wheel_filename(wheel.name)
        except Exception:
            continue
        if canonicalize_name(wname) == canonicalize_name(name) and str(wversion) == version and tags & supported:
            print(wheel)
            raise SystemExit
PY
)
    if [ -z "$found" ]; then
      say "no local copy of $pin in $wheel_dirs: cannot resolve it from here"
      exit 1
    fi
    ln -s "$found" "$tmp/local-wheels/"
    say "substituting $pin with this machine's copy of the same wheel file: $found (--find-links $tmp/local-wheels, which holds only that file)"
    nv "$(basename "$found") here is the file the Space would download from that index (same name; content not compared)"
  done
  local_wheels=(--find-links "$tmp/local-wheels")
  say "requirements.txt as installed here (the unreachable index line commented out):"
  diff "$repo/requirements.txt" "$build/requirements.txt" | sed 's/^/    /' || true
fi

cd "$build"
say "in $build: $(ls -A | tr '\n' ' ')"
say "resolving: $space_line (pip install --dry-run --ignore-installed --report) ${local_wheels[*]}"
start=$(date +%s)
if ! vpip install -q --dry-run --ignore-installed --report "$tmp/report.json" -r requirements.txt "${space_extra[@]}" \
     "${local_wheels[@]}"; then
  say "FAILED: pip could not resolve the Space's line: $space_line (two pins conflict? see above)"
  exit 1
fi
say "resolved in $(( $(date +%s) - start )) s"
[ -n "$report_copy" ] && cp "$tmp/report.json" "$report_copy"

if ! "$vpy" - "$tmp/report.json" "$repo/$source_requirements" "$sdk" "$zerogpu" <<'PY'; then
import json, sys
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

report, requirements, sdk, zerogpu = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
installs = {canonicalize_name(i["metadata"]["name"]): i for i in json.load(open(report))["install"]}
version = {name: i["metadata"]["version"] for name, i in installs.items()}
print(f"  {len(version)} packages would be installed; the key ones:")
for name in ("torch", "transformers", "onnxscript", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai", "gradio",
             "diffusers", "huggingface-hub", "spaces", "mcp", "pydantic", "authlib", "itsdangerous", "uvicorn",
             "websockets"):
    if name in version:
        print(f"    {name}=={version[name]}")
problems = []
pins = {}
for line in open(requirements):
    line = line.split(" #")[0].strip()
    if line and not line.startswith(("#", "-")):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            pins.update({canonicalize_name(req.name): s.version for s in req.specifier if s.operator == "=="})
pins["gradio"] = sdk
wrong = {n: (v, version.get(n)) for n, v in pins.items() if version.get(n) != v}
if wrong:
    problems.append("not the pinned version: " + ", ".join(f"{n} {got} instead of {want}" for n, (want, got)
                                                            in wrong.items()))
else:
    print(f"  every == pin of the requirements file ({len(pins) - 1}) and gradio=={sdk} resolved to exactly that version")
# gradio's extras on the Space's line: [oauth] brings authlib and itsdangerous, [mcp] brings mcp and pydantic.
missing = [n for n in ("authlib", "itsdangerous", "mcp", "pydantic", "uvicorn", "websockets", "spaces")
           if n not in version]
if missing:
    problems.append("the Space's line should install these, and does not: " + ", ".join(missing))
gpu = sorted(n for n in version if n.startswith("nvidia-") or n in ("triton", "pytorch-triton"))
if zerogpu:
    if version.get("torch", "+cpu").endswith("+cpu") or not gpu:
        problems.append(f"torch is not the CUDA build ZeroGPU needs: {version.get('torch')}")
    else:
        print(f"  torch {version['torch']} with its CUDA libraries ({len(gpu)} nvidia-*/triton packages)")
else:
    if not version.get("torch", "").endswith("+cpu"):
        problems.append(f"torch is not the CPU build: {version.get('torch')}")
    if gpu:
        problems.append("CUDA packages would be installed: " + ", ".join(gpu))
ort = sorted(n for n in version if n == "onnxruntime" or n.startswith("onnxruntime-") and n not in
             ("onnxruntime-genai", "onnxruntime-extensions"))
if ort != ["onnxruntime"]:
    problems.append(f"`import onnxruntime` must come from exactly one package, the CPU one: {ort}")
sdists = sorted(n for n, i in installs.items()
                if not i.get("download_info", {}).get("url", "").endswith(".whl") and not i.get("is_direct"))
print("  built from source on the Space: " + (", ".join(sdists) if sdists else "nothing (every package is a wheel)"))
for problem in problems:
    print(f"  FAILED: {problem}")
sys.exit(1 if problems else 0)
PY
  say "FAILED: the resolution is not what a CPU Space needs (above)"
  exit 1
fi
if [ $zerogpu = 1 ]; then
  ok "the ZeroGPU variant: $source_requirements as requirements.txt + ${space_extra[*]} resolve from PyPI (pip $(vpip --version | cut -d' ' -f2), $("$vpy" -c 'import platform; print("python" + platform.python_version())'), this machine's Linux x86_64): every pin holds, torch is PyPI's CUDA build, one onnxruntime (the CPU one)"
  nv "ZeroGPU's own build line (its torch cap and spaces pin come from public build logs, not from a build here), the ZeroGPU hardware and its CUDA driver"
  exit 0
fi
ok "requirements.txt + ${space_extra[*]} resolve from PyPI (pip $(vpip --version | cut -d' ' -f2), $python, this machine's Linux x86_64): every pin holds, gradio's [oauth,mcp] extras and the servers come along, torch is the +cpu build, no nvidia-* package, one onnxruntime (the CPU one)"

if [ $mode = resolve ]; then
  nv "the install itself, the app's start and its results (full mode: scripts/space_check.sh without --resolve-only)"
  exit 0
fi

say "installing into the fresh venv: $space_line"
start=$(date +%s)
if ! vpip install -q -r requirements.txt "${space_extra[@]}" "${local_wheels[@]}"; then
  say "FAILED: the install failed (above)"
  exit 1
fi
say "installed in $(( $(date +%s) - start )) s; venv size $(du -sh "$tmp/venv" | cut -f1)"
if vpip check; then ok "the install: pip check finds no broken requirement"; else say "FAILED: pip check"; exit 1; fi

head=$(git -C "$repo" rev-parse HEAD)
git clone -q --no-local "$repo" "$tmp/space"
git -C "$tmp/space" checkout -q --detach "$head"
say "the Space's files: a clone of the committed HEAD $(git -C "$repo" log -1 --format='%h %s' HEAD)"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  say "note: the working tree has uncommitted changes; they are not in the clone"
fi

cd "$tmp/space"
# Every module of the app imports with exactly what requirements.txt installed (TensorRT is GPU-only and optional).
if ! "${pip_env[@]}" "$vpy" - <<'PY'; then
import importlib, pathlib, sys
sys.path.insert(0, ".")
failed = []
modules = ["app"] + [f"{p.parent.name}.{p.stem}" for d in ("arena", "backends", "ui") for p in sorted(
    pathlib.Path(d).glob("*.py")) if p.stem != "__init__"]
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
for heavy in ("torch", "transformers", "onnxscript", "onnxruntime", "onnxruntime_genai", "diffusers", "skimage",
              "gguf", "accelerate", "psutil", "plotly"):
    try:
        importlib.import_module(heavy)
    except Exception as exc:  # noqa: BLE001
        failed.append(f"{heavy}: {type(exc).__name__}: {exc}")
print(f"  imported {len(modules)} app modules and the runtime libraries" if not failed else "")
for line in failed:
    print(f"  FAILED import {line}")
sys.exit(1 if failed else 0)
PY
  say "FAILED: an import is missing from requirements.txt (above)"
  exit 1
fi
ok "every module of the app (arena/, backends/, ui/, app.py) and torch, transformers, onnxscript, onnxruntime, onnxruntime_genai, diffusers, skimage, gguf, accelerate, psutil, plotly import in the Space's venv"

port=$("$vpy" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$tmp/cache" "$tmp/hf-home"
say "starting: SPACE_ID=local/space-check GRADIO_SERVER_PORT=$port ARENA_CACHE_DIR=$tmp/cache HF_HOME=$tmp/hf-home python app.py"
SPACE_ID=local/space-check GRADIO_SERVER_PORT=$port ARENA_CACHE_DIR=$tmp/cache HF_HOME=$tmp/hf-home \
  GRADIO_ANALYTICS_ENABLED=False setsid "${pip_env[@]}" "$vpy" app.py > "$tmp/app.log" 2>&1 &
app_pid=$!
start=$(date +%s)
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
  if ! kill -0 "$app_pid" 2>/dev/null; then
    say "FAILED: the app exited before answering; its last lines:"
    tail -n 30 "$tmp/app.log" | sed 's/^/    /'
    exit 1
  fi
  if [ $(( $(date +%s) - start )) -gt 300 ]; then say "FAILED: the app did not answer within 300 s"; exit 1; fi
  sleep 1
done
ok "the app starts from the clone with that venv and answers on port $port ($(( $(date +%s) - start )) s)"

set +e
"${pip_env[@]}" "$vpy" - "http://127.0.0.1:$port/" "$tmp/calls.tsv" <<'PY'
import sys, time
from gradio_client import Client

client = Client(sys.argv[1], verbose=False)
calls = (
    ("/compare_text", "Why should one run machine learning models on-premises?",
     lambda prompt: client.predict(prompt=prompt, api_name="/compare_text")),
    ("/compare_image", "a red circle on a blue background",
     lambda prompt: client.predict(prompt=prompt, api_name="/compare_image")[1]),
)
outcomes = []
for endpoint, prompt, call in calls:
    started = time.time()
    try:
        result = call(prompt)
    except Exception as exc:  # noqa: BLE001
        result = {"error": f"{type(exc).__name__}: {exc}"}
    results = result.get("results") or []
    kinds = [(r.get("verdict") or {}).get("kind") for r in results]
    match = bool(results) and all(kind == "MATCH" for kind in kinds)
    print(f"  {endpoint} {prompt!r}, defaults ({time.time() - started:.0f} s):"
          + (f" error: {result['error']}" if result.get("error") else ""))
    for r, kind in zip(results, kinds):
        print(f"    {r.get('label')}: {kind}: {(r.get('verdict') or {}).get('reason')}"
              + (f" (error: {r['error']})" if r.get("error") else ""))
    summary = ", ".join(f"{r.get('label')} {kind}" for r, kind in zip(results, kinds)) or f"error: {result.get('error')}"
    outcomes.append(f"{endpoint}\t{'MATCH' if match else 'FAILED'}\t{summary}")
open(sys.argv[2], "w").write("\n".join(outcomes) + "\n")
PY
set -e
[ -f "$tmp/calls.tsv" ] || { say "FAILED: the gradio_client calls did not run (above)"; exit 1; }
calls=0
while IFS=$'\t' read -r endpoint outcome detail; do
  if [ "$outcome" = MATCH ]; then
    ok "$endpoint through gradio_client on the Space's install, every verdict MATCH: $detail"
  else
    calls=1
    nv "$endpoint on the Space's install: not every verdict is MATCH: ${detail:0:300}"
  fi
done < "$tmp/calls.tsv"
if [ $calls != 0 ]; then
  say "FAILED: not every verdict is MATCH (above); the app's last lines:"
  tail -n 20 "$tmp/app.log" | sed 's/^/    /'
fi
nv "the Space's own image: its pip version, what it pre-installs, its hardware and its network (the hub is reachable from a Space; from here it may not be); the install line itself is the one Space build logs show"
exit $calls
