#!/usr/bin/env bash
# For whoever deploys Obscura: add a model from the Hugging Face Hub to the app's catalog in one
# command. Fetches the checkpoint (Hugging Face CLIPModel or OpenCLIP layout), converts it with the
# same converter the app runs in the tab, verifies the conversion against the original weights
# (min cosine on the bundled fidelity images and prompts: q8 >= 0.995, q4 >= 0.98, f16 >= 0.999),
# and rewrites public/models/catalog.json.
#
#   bash scripts/add-model.sh <hub repo> [--dtype q8|q4|f16|f32] [--name NAME] [--domain D]
#        [--license L] [--template T]... [--endpoint URL] [--revision REV]
#
# Environment: HF_TOKEN (gated repositories), HF_ENDPOINT (a mirror), OBSCURA_MODELS (where the
# converted models and catalog go; default public/models), WEIGHTS_TOOL (a built weights-tool;
# default: built here in release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -lt 1 ] || [[ $1 == -* ]]; then
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
fi
repo=$1
shift
dtype=q8
fetch_args=()
convert_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --dtype) dtype=$2; shift 2 ;;
    --endpoint|--revision) fetch_args+=("$1" "$2"); shift 2 ;;
    --name|--domain|--license|--template) convert_args+=("$1" "$2"); shift 2 ;;
    *) echo "add-model.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case $dtype in
  f32) min=0.99999 ;; f16) min=0.999 ;; q8) min=0.995 ;; q4) min=0.98 ;;
  *) echo "add-model.sh: --dtype must be f32, f16, q8 or q4 (got $dtype)" >&2; exit 2 ;;
esac

tool=${WEIGHTS_TOOL:-}
if [ -z "$tool" ]; then
  cargo build -q --release -p weights-tool
  tool=target/release/weights-tool
fi
models=${OBSCURA_MODELS:-public/models}
slug=$(echo "${repo##*/}" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9.\n-' '-')
checkpoint=checkpoints/${repo//\//--}
out=$models/$slug/$dtype

echo "add-model: fetching $repo"
"$tool" fetch "$repo" --out "$checkpoint" "${fetch_args[@]}"
echo "add-model: converting to $dtype in $out"
"$tool" convert "$checkpoint" --out "$out" --dtype "$dtype" --source "$repo" "${convert_args[@]}"
echo "add-model: verifying against the original weights (min cosine $min)"
texts=()
for t in "an H&E image of tumour." "an H&E image patch of lymphocytes." "a chest X-ray." "a fundus photograph." "a photo of a cat."; do
  texts+=(--text "$t")
done
if ! "$tool" verify "$out" --against "$checkpoint" --images model-wasm/fidelity "${texts[@]}" \
    --min-image-cos "$min" --min-text-cos "$min" --min-agreement 0.75; then
  rm -rf "$out"
  echo "add-model: $repo at $dtype is below the fidelity bound; removed $out (try a wider dtype)" >&2
  exit 2
fi
"$tool" catalog "$models"
echo "add-model: $repo ($dtype) is in $models/catalog.json"
