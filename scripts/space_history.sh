#!/usr/bin/env bash
# Make what a Hugging Face Space can take from this repository: its committed HEAD as ONE orphan commit whose binary
# files (every pattern .gitattributes marks filter=lfs) are Git LFS pointers, in a new repository outside this one.
#
# Why: the Hub refuses binary files outside LFS/Xet, and this repository's history holds safetensors and PNGs as
# plain git blobs, so `git push` of this history to a Space fails. `hf upload` works from any folder (it sends the
# binaries through LFS/Xet by itself); this script is for publishing with git.
#
#   scripts/space_history.sh [--zerogpu] [--out DIR] [--folder-only] [--push SPACE_GIT_URL]
#     --zerogpu        the ZeroGPU variant: requirements-zerogpu.txt becomes requirements.txt, the front matter's
#                      python_version becomes "3.12.12" (ZeroGPU takes 3.12.12 or 3.10.13) and its
#                      suggested_hardware line goes (the Hub's list of flavors names no ZeroGPU value)
#     --out DIR        where to make it (default: a new temporary folder); DIR must not exist
#     --folder-only    make the folder only, no git repository (then: hf upload <you>/<space> DIR --repo-type space)
#     --push URL       push the commit to the Space (https://huggingface.co/spaces/<you>/<space>), replacing its
#                      main branch: git asks for your user name and a write token
# Needs git-lfs for the commit (not for --folder-only). This repository is only read: no branch, checkout, or
# configuration of it changes (git archive HEAD; the LFS filter is configured in the new repository only).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
zerogpu=0 out= folder_only=0 push=
while [ $# -gt 0 ]; do
  case $1 in
    --zerogpu) zerogpu=1 ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --folder-only) folder_only=1 ;;
    --push) push=$2; shift ;;
    *) echo "space_history: unknown option $1 (use --zerogpu, --out DIR, --folder-only, --push URL)" >&2; exit 2 ;;
  esac
  shift
done
say() { echo "space_history: $*"; }

if [ $folder_only = 0 ] && ! git lfs version >/dev/null 2>&1; then
  say "git-lfs is not installed: the commit would hold the binaries as plain blobs, which the Hub refuses."
  say "Install git-lfs, or make the folder only and upload it: $0 --folder-only ... && hf upload <you>/<space> DIR --repo-type space"
  exit 1
fi
if [ -n "$out" ]; then
  [ -e "$out" ] && { say "$out exists; name a new folder"; exit 1; }
  mkdir -p "$out"
else
  out=$(mktemp -d "${TMPDIR:-/tmp}/space-history.XXXXXX")
fi

head=$(git -C "$repo" rev-parse HEAD)
git -C "$repo" archive --format=tar HEAD | tar -x -C "$out"
say "the committed HEAD $(git -C "$repo" log -1 --format='%h %s' HEAD) in $out"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  say "note: the working tree has uncommitted changes; they are not in the Space's files"
fi

if [ $zerogpu = 1 ]; then
  [ -f "$out/requirements-zerogpu.txt" ] || { say "FAILED: the committed HEAD has no requirements-zerogpu.txt (commit it first)"; exit 1; }
  cp "$out/requirements-zerogpu.txt" "$out/requirements.txt"
  # Only the front matter (the lines between the first two ---) changes.
  awk 'NR == 1 && /^---$/ { fm = 1; print; next }
       fm && /^---$/ { fm = 0; print; next }
       fm && /^python_version:/ { print "python_version: \"3.12.12\""; next }
       fm && /^suggested_hardware:/ { next }
       { print }' "$out/README.md" > "$out/README.md.new"
  mv "$out/README.md.new" "$out/README.md"
  say "ZeroGPU variant: requirements-zerogpu.txt as requirements.txt; front matter: python_version \"3.12.12\", no suggested_hardware"
fi

if [ $folder_only = 1 ]; then
  say "folder only. Publish it with: hf upload <you>/<space> $out --repo-type space"
  exit 0
fi

cd "$out"
git init -q -b main
git lfs install --local >/dev/null  # this new repository only: the LFS filter and pre-push hook live in its .git
git add -A
git -c user.name="${GIT_AUTHOR_NAME:-space_history}" -c user.email="${GIT_AUTHOR_EMAIL:-space_history@localhost}" \
  commit -q -m "Backend Arena $(git -C "$repo" rev-parse --short HEAD)$([ $zerogpu = 1 ] && echo ' (ZeroGPU)')" \
  -m "One commit made by scripts/space_history.sh from $head; binaries are Git LFS pointers."

# Every binary file of the commit must be a pointer: a NUL byte in a committed blob means one is not.
plain=()
while IFS= read -r -d '' name; do
  if git cat-file blob "HEAD:$name" | head -c 8192 | grep -qaP '\x00'; then plain+=("$name"); fi
done < <(git ls-files -z)
if [ ${#plain[@]} -gt 0 ]; then
  say "FAILED: binary files committed as plain blobs (not covered by .gitattributes): ${plain[*]}"
  exit 1
fi
pointers=$(git lfs ls-files | wc -l)
say "one orphan commit $(git rev-parse --short HEAD): $(git ls-files | wc -l) files, $pointers of them LFS pointers, no binary blob"
if [ -n "$push" ]; then
  say "pushing to $push (its main branch is replaced)"
  git push --force "$push" HEAD:main
else
  say "push it with: git -C $out push --force https://huggingface.co/spaces/<you>/<space> HEAD:main"
fi
