module github.com/switchyard/switchyard/clients/go

// Go 1.19 and the gRPC/protobuf versions Debian 12 ships (golang-go, golang-google-grpc-dev,
// golang-google-protobuf-dev), so the module builds offline from those packages
// (tools/debian-vendor.sh). Newer versions work as well; see README.md.
go 1.19

require (
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
