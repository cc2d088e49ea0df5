#!/usr/bin/env sh
# Build the Linux x86-64 release `handler` and assemble dist/ for `azd package` / `azd deploy`:
#   dist/host.json  dist/<Function>/function.json (IncrementalCopy, FullLoad, CopyTable, …)  dist/handler
#
# Target: x86_64-unknown-linux-musl by default, a static binary that runs on any Functions Linux
# image whatever its glibc (the crate uses rustls, no OpenSSL). Override with
#   CDC_BUILD_TARGET=x86_64-unknown-linux-gnu ./scripts/build-dist.sh
# (a glibc build must come from a distro no newer than the Functions image: see docs/deploy.md),
# or CDC_BUILD_TOOL="cargo zigbuild" with CDC_BUILD_TARGET=x86_64-unknown-linux-gnu.2.28.
set -eu

cd "$(dirname "$0")/.."

target="${CDC_BUILD_TARGET:-x86_64-unknown-linux-musl}"
tool="${CDC_BUILD_TOOL:-cargo build}"
# `cargo zigbuild --target x86_64-unknown-linux-gnu.2.28` writes to .../x86_64-unknown-linux-gnu.
target_dir_name="${target%%.[0-9]*}"
cargo_target_dir="${CARGO_TARGET_DIR:-target}"

if [ "$tool" = "cargo build" ] && command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx "$target_dir_name"; then
    echo "build-dist: adding Rust target $target_dir_name (rustup target add)" >&2
    rustup target add "$target_dir_name"
  fi
fi

case "$target" in
  *-linux-musl)
    # aws-lc-sys (rustls' crypto provider) compiles C for the target: it needs a musl compiler.
    if [ "$tool" = "cargo build" ] && [ -z "${CC_x86_64_unknown_linux_musl:-}" ] && ! command -v musl-gcc >/dev/null 2>&1; then
      echo "build-dist: warning: musl-gcc not found (Debian/Ubuntu: apt-get install musl-tools);" \
        "the C parts of the TLS stack may fail to build or link" >&2
    fi
    ;;
esac

echo "build-dist: $tool --release --target $target" >&2
# shellcheck disable=SC2086 # $tool is two words on purpose
$tool --release --locked --bin handler --target "$target"

binary="$cargo_target_dir/$target_dir_name/release/handler"
if [ ! -f "$binary" ]; then
  echo "build-dist: expected binary not found: $binary" >&2
  exit 1
fi

rm -rf dist
mkdir -p dist
cp host.json dist/
# Every function folder (a top-level folder with a function.json), so a new function ships
# without editing this list.
for fn in IncrementalCopy FullLoad CopyTable; do
  if [ ! -f "$fn/function.json" ]; then
    echo "build-dist: missing $fn/function.json" >&2
    exit 1
  fi
done
for json in */function.json; do
  fn=${json%/function.json}
  mkdir -p "dist/$fn"
  cp "$json" "dist/$fn/"
done
cp "$binary" dist/handler
chmod 0755 dist/handler

echo "build-dist: dist/ ready ($(du -h dist/handler | cut -f1) handler, target $target)" >&2
