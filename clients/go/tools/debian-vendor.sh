#!/bin/sh
# Makes clients/go/vendor/ from Debian's Go packages so the module builds and tests OFFLINE.
#
# Debian ships gRPC-Go and protobuf-Go as source under /usr/share/gocode/src (packages
# golang-google-grpc-dev, golang-google-protobuf-dev, golang-github-golang-protobuf-1-5-dev and
# what they depend on), not as a module cache, so `go build` cannot download or verify them.
# With a vendor/ folder Go reads neither the network nor go.sum: vendor/ holds one symlink per
# module into /usr/share/gocode/src and vendor/modules.txt names the modules go.mod requires.
# vendor/ is not committed (.gitignore); with network access, delete it and run `go mod tidy`.
#
# Usage: tools/debian-vendor.sh   (from anywhere; GOCODE=DIR overrides /usr/share/gocode/src)
# Exits 1 with one line naming the missing Debian package when something is not installed.
set -eu

module_dir=$(cd "$(dirname "$0")/.." && pwd)
gocode=${GOCODE:-/usr/share/gocode/src}

# Every module the client's packages import, directly or not, as PATH=DEBIAN_PACKAGE.
modules="google.golang.org/grpc=golang-google-grpc-dev
google.golang.org/protobuf=golang-google-protobuf-dev
google.golang.org/genproto=golang-google-genproto-dev
github.com/golang/protobuf=golang-github-golang-protobuf-1-5-dev
golang.org/x/net=golang-golang-x-net-dev
golang.org/x/sys=golang-golang-x-sys-dev
golang.org/x/text=golang-golang-x-text-dev"

missing=""
for entry in $modules; do
    [ -d "$gocode/${entry%%=*}" ] || missing="$missing ${entry#*=}"
done
if [ -n "$missing" ]; then
    echo "debian-vendor: Go modules missing under $gocode; install them: apt-get install$missing" >&2
    exit 1
fi
# grpc-go 1.33 calls github.com/golang/protobuf's APIv2 wrapper (1.4+); Debian's 1.3 package
# (golang-github-golang-protobuf-1-3-dev) installs the same path with the old API.
if ! grep -qs 'google.golang.org/protobuf' "$gocode/github.com/golang/protobuf/proto/proto.go"; then
    echo "debian-vendor: $gocode/github.com/golang/protobuf is older than 1.4; install: apt-get install golang-github-golang-protobuf-1-5-dev" >&2
    exit 1
fi

# Build the new tree beside the old one and swap it in, so a concurrent build never sees half of it.
staging="$module_dir/.vendor.$$"
rm -rf "$staging"
mkdir -p "$staging"
for entry in $modules; do
    path=${entry%%=*}
    mkdir -p "$staging/$(dirname "$path")"
    ln -s "$gocode/$path" "$staging/$path"
done

# modules.txt: each module go.mod requires, marked explicit, with the Go version its own go.mod
# declares (what `go mod vendor` writes; Go checks these lines against go.mod).
awk '/^require \(/ {block = 1; next} block && /^\)/ {block = 0} block && NF >= 2 {print $1, $2} /^require [^(]/ {print $2, $3}' \
    "$module_dir/go.mod" | while read -r path version; do
    go_version=$(awk '/^go / {print $2; exit}' "$gocode/$path/go.mod" 2>/dev/null || true)
    echo "# $path $version"
    if [ -n "$go_version" ]; then
        echo "## explicit; go $go_version"
    else
        echo "## explicit"
    fi
done > "$staging/modules.txt"

rm -rf "$module_dir/vendor.old"
if [ -d "$module_dir/vendor" ]; then
    mv "$module_dir/vendor" "$module_dir/vendor.old"
fi
mv "$staging" "$module_dir/vendor"
rm -rf "$module_dir/vendor.old"
echo "debian-vendor: $module_dir/vendor -> $gocode"
