#!/bin/sh
# Builds the plugin against a configured Suricata 8.0.x source tree:
#   SURICATA_SRC=/path/to/suricata-8.0.x crates/qmwatch-suricata/build.sh
# and prints the path of the shared object (target/release/libqmwatch_suricata.so).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${SURICATA_SRC:?set SURICATA_SRC to a configured Suricata 8.0.x source tree}"
[ -f "$SURICATA_SRC/rust/Cargo.toml" ] || {
    echo "$SURICATA_SRC/rust/Cargo.toml missing: run ./configure in the Suricata tree first" >&2
    exit 1
}
ln -sfn "$(cd "$SURICATA_SRC" && pwd)" "$here/suricata-src"
cd "$here"
cargo build --release -j"${JOBS:-2}" >&2
echo "$here/target/release/libqmwatch_suricata.so"
