#!/usr/bin/env bash
# trunk post-build hook: trunk starts the app with an inline <script type="module">, which the
# page's Content-Security-Policy (script-src 'self') rightly blocks. Move it into boot.js.
set -euo pipefail
dir="${TRUNK_STAGING_DIR:?run by trunk as a post_build hook}"
perl -0777 -ne 'print $1 if m{<script type="module">(.*?)</script>}s' "$dir/index.html" > "$dir/boot.js"
[ -s "$dir/boot.js" ] || { echo "csp-boot: no inline module script in index.html" >&2; exit 1; }
perl -0777 -pi -e 's{<script type="module">.*?</script>}{<script type="module" src="./boot.js"></script>}s' "$dir/index.html"
