#!/usr/bin/env bash
# The main job until the app lands: embed the bundled sample images and texts natively with
# `weights-tool embed` and print their cosine similarities (GPU when there is one, else CPU).
# The bundled model is a tiny *random-weight* CLIP from the golden fixtures until the trained
# demo model ships, so the numbers show the pipeline working, not meaningful retrieval.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=${OBSCURA_MODEL:-tests/golden/models/tiny-gelu-eos49407}
cargo run -q -p weights-tool -- embed --model "$model" --format table \
  --image tests/golden/images \
  --text "an H&E image of adipose tissue." --text "an H&E image of lymphocytes." \
  --text "a photo of a cat" "$@"
