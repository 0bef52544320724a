#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECS each, default 20) and fails on the
# first crash, leaving the input in fuzz/artifacts/<target>/. Seeds each target's corpus
# from tests/fixtures first, so nothing is duplicated into git.
#
#   fuzz/run.sh                 # every target, 20 s each
#   FUZZ_SECS=120 fuzz/run.sh source_jellyfin
#   FUZZ_DEV=1 FUZZ_SECS=10 fuzz/run.sh   # what CI runs
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Uses the nightly toolchain when rustup has
# one; the targets build without a sanitizer (`-s none`: our code forbids unsafe, and what
# we hunt is panics, overflows and hangs), which stable can build too.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=..
FIX=$ROOT/tests/fixtures
SECS=${FUZZ_SECS:-20}

TOOLCHAIN=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  TOOLCHAIN=(+nightly)
fi
FUZZ=(cargo "${TOOLCHAIN[@]}" fuzz)
BUILD_FLAGS=(-s none --debug-assertions)
# FUZZ_DEV=1: an unoptimised build (minutes less to build, fewer executions per second):
# what CI uses for its short runs. Longer hunts should keep the optimised default.
if [ -n "${FUZZ_DEV:-}" ]; then
  BUILD_FLAGS+=(--dev)
fi

# --- seed corpora ------------------------------------------------------------------------
seed() { # seed TARGET FILE [PREFIX]: copies FILE, after PREFIX (a printf format) if given
  local dir=corpus/$1 name
  name=$(basename "$(dirname "$2")")-$(basename "$2")
  mkdir -p "$dir"
  { printf "${3:-}"; cat "$2"; } >"$dir/$name"
}
bodies() { # the request bodies of one corpus source (not the .expect.json files)
  find "$FIX/corpus/$1" -maxdepth 1 -name '*.json' ! -name '*.expect.json' | sort
}
BOUNDARY=------------------------Zq8wXr2mPb7Kd4Hs9Tn1Vc
plex_multipart() { # the multipart body Plex sends around a payload
  printf -- '--%s\r\nContent-Disposition: form-data; name="payload"\r\nContent-Type: application/json\r\n\r\n' "$BOUNDARY"
  cat "$1"
  printf -- '\r\n--%s\r\nContent-Disposition: form-data; name="thumb"; filename="thumb.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' "$BOUNDARY"
  printf '\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\xff\xd9'
  printf -- '\r\n--%s--\r\n' "$BOUNDARY"
}

i=0
for app in sonarr radarr lidarr readarr whisparr; do
  # source_arr reads its first byte as the app: 0 sonarr … 4 whisparr.
  for f in $(bodies $app); do seed source_arr "$f" "\\x0$i"; done
  i=$((i + 1))
done
for src in tautulli jellyfin custom; do
  for f in $(bodies $src); do seed "source_$src" "$f"; done
done
mkdir -p corpus/source_plex corpus/multipart
for f in $(bodies plex); do
  plex_multipart "$f" >"corpus/source_plex/$(basename "$f")"
  { printf 'multipart/form-data; boundary=%s\n' "$BOUNDARY"; plex_multipart "$f"; } \
    >"corpus/multipart/$(basename "$f")"
done
for f in $(bodies jellyfin | head -3); do seed multipart "$f" 'text/plain; charset=utf-8\n'; done
seed config "$ROOT/config/relayarr.example.toml"
# The commented-out blocks' key lines switched on (hooks, Plex, mappings): not valid as a
# whole, but full of the key names the fuzzer can splice.
sed -n 's/^# \(\[\|[a-z_]* = \)/\1/p' "$ROOT/config/relayarr.example.toml" \
  >corpus/config/uncommented.toml
mkdir -p corpus/signature
printf 'sha256=3b7e1f1d7c0c6b6a0f4f9a1e5d2c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170\n{"event":"import"}' \
  >corpus/signature/hmac
printf 'Basic c29uYXJyOlBhNTV3MHJkIQ==\n' >corpus/signature/basic
printf 'Bearer lidarr-token\n' >corpus/signature/bearer

# --- build once, then run each target ----------------------------------------------------
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("${FUZZ[@]}" list)
fi
"${FUZZ[@]}" build "${BUILD_FLAGS[@]}"
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${SECS}s"
  log=$(mktemp)
  # -timeout: one input taking over 10 s is a hang, and fails the run like a crash.
  if ! "${FUZZ[@]}" run "${BUILD_FLAGS[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz: $t FAILED (the input is in fuzz/artifacts/$t/)"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$log" | tr '\n' ' '
  echo
  rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets ran ${SECS}s each without a crash"
