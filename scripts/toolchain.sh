#!/usr/bin/env bash
# The pinned nightly for the threaded CPU worker (wasm atomics need `-Z build-std`), with
# rust-src. Sourced by setup.sh (installs) and threads.sh (uses): sets OBSCURA_NIGHTLY to a
# toolchain name rustup knows. The pin is the nightly of 2026-05-20 (rustc 1.97.0-nightly
# e50aa6fba 2026-05-19); a machine whose `nightly` is that one uses it as it is.
OBSCURA_NIGHTLY_DATE=2026-05-20
if rustc +nightly -V 2>/dev/null | grep -q "e50aa6fba"; then
  OBSCURA_NIGHTLY=nightly
else
  OBSCURA_NIGHTLY="nightly-$OBSCURA_NIGHTLY_DATE"
  if ! rustc "+$OBSCURA_NIGHTLY" -V >/dev/null 2>&1; then
    echo "setup: installing $OBSCURA_NIGHTLY (the threaded CPU worker)"
    rustup toolchain install "$OBSCURA_NIGHTLY" --profile minimal --component rust-src
  fi
fi
if [ ! -d "$(rustc "+$OBSCURA_NIGHTLY" --print sysroot)/lib/rustlib/src/rust/library" ]; then
  echo "setup: adding rust-src to $OBSCURA_NIGHTLY"
  rustup component add rust-src --toolchain "$OBSCURA_NIGHTLY"
fi
export OBSCURA_NIGHTLY
