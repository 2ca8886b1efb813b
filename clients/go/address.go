package switchyard

import (
	"fmt"
	"net"
	"strings"
)

// DefaultPort is the scheduler's gRPC port; an address that names a host only gets it.
const DefaultPort = 50051

// DefaultTarget is where the scheduler listens unless told otherwise.
const DefaultTarget = "127.0.0.1:50051"

// targetSchemes are gRPC target strings passed through as they are (they carry their own port).
var targetSchemes = []string{"dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:", "passthrough:"}

// WithDefaultPort returns address with the scheduler's port added when it names a host only:
// "sched" → "sched:50051", "[::1]" → "[::1]:50051", "::1" → "[::1]:50051". (gRPC itself would
// dial 443.) gRPC target strings with a scheme (dns:, unix:, ...) are returned unchanged.
func WithDefaultPort(address string) string {
	for _, scheme := range targetSchemes {
		if strings.HasPrefix(address, scheme) {
			return address
		}
	}
	if strings.Contains(address, "/") {
		return address
	}
	port := fmt.Sprint(DefaultPort)
	if strings.HasPrefix(address, "[") {
		if strings.Contains(address, "]:") {
			return address
		}
		return address + ":" + port
	}
	if strings.Count(address, ":") > 1 { // a bare IPv6 address
		return "[" + address + "]:" + port
	}
	if strings.Contains(address, ":") {
		return address
	}
	return address + ":" + port
}

// ParseAddresses returns the scheduler addresses in target: "HOST:PORT", or several as
// "HOST:PORT,HOST:PORT". A host without a port gets DefaultPort; blanks and repeats are
// dropped and the order is kept (it is the order in which they are tried). An empty list is
// an ErrInvalidArgument.
func ParseAddresses(target string) ([]string, error) {
	var addresses []string
	seen := map[string]bool{}
	for _, piece := range strings.Split(target, ",") {
		piece = strings.TrimSpace(piece)
		if piece == "" {
			continue
		}
		address := WithDefaultPort(piece)
		if !seen[address] {
			seen[address] = true
			addresses = append(addresses, address)
		}
	}
	if len(addresses) == 0 {
		return nil, invalidArgument("no scheduler address in %q: give HOST:PORT, or several as HOST:PORT,HOST:PORT", target)
	}
	return addresses, nil
}

// isLoopback reports whether address (HOST:PORT or a gRPC target) is on this machine, where a
// token sent without TLS crosses no network.
func isLoopback(address string) bool {
	if strings.HasPrefix(address, "unix:") || strings.HasPrefix(address, "unix-abstract:") {
		return true
	}
	for _, scheme := range []string{"dns:", "ipv4:", "ipv6:", "passthrough:"} {
		address = strings.TrimPrefix(address, scheme)
	}
	address = strings.TrimLeft(address, "/")
	host := address
	if h, _, err := net.SplitHostPort(address); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	switch strings.ToLower(host) {
	case "localhost", "localhost.localdomain", "ip6-localhost":
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
