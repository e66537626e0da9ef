#!/usr/bin/env bash
# Install Swagger UI's browser files (npm package swagger-ui-dist, pinned
# below) into DIR, the folder that paymentsd serves at /docs (docs_root).
#   scripts/swagger-ui.sh DIR
# Idempotent: does nothing when DIR holds this version already.  The tarball
# is fetched with npm and checked against the pinned integrity before use.
# Only what the page loads is kept, with the package's licence files.
set -euo pipefail

version=5.35.0
integrity=sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==
files=(swagger-ui-bundle.js swagger-ui.css favicon-16x16.png favicon-32x32.png
       LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt)

dest=${1:?usage: swagger-ui.sh DIR}
if [ "$(cat "$dest/VERSION" 2>/dev/null)" = "swagger-ui-dist $version" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "swagger-ui.sh: npm is missing (apt-get install npm)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "swagger-ui.sh: fetching swagger-ui-dist $version" >&2
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tgz="$tmp/swagger-ui-dist-$version.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
    echo "swagger-ui.sh: $tgz: integrity $got, want $integrity" >&2
    exit 1
fi
tar -xzf "$tgz" -C "$tmp"
mkdir -p "$tmp/out"
for f in "${files[@]}"; do
    install -m 644 "$tmp/package/$f" "$tmp/out/$f"
done
echo "swagger-ui-dist $version" > "$tmp/out/VERSION"
# Replace the folder in one step, so a running paymentsd never reads half of it.
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$tmp/out" "$dest"
rm -rf "$dest.old"
echo "swagger-ui.sh: installed in $dest" >&2
