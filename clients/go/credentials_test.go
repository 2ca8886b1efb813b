package switchyard_test

// TLS, mTLS and bearer tokens against fakes on loopback, with throw-away certificates made here.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	switchyard "github.com/switchyard/switchyard/clients/go"
)

// authority is a test CA that signs leaf certificates and writes them as PEM files.
type authority struct {
	dir         string
	certificate *x509.Certificate
	key         *ecdsa.PrivateKey
	certFile    string
}

var serial int64

func newAuthority(t *testing.T, name string) *authority {
	t.Helper()
	dir := t.TempDir()
	key := newKey(t)
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(nextSerial()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certificate, _ := x509.ParseCertificate(der)
	ca := &authority{dir: dir, certificate: certificate, key: key, certFile: filepath.Join(dir, name+".crt")}
	writePEM(t, ca.certFile, "CERTIFICATE", der)
	return ca
}

// leaf signs a certificate for CN=name, valid for 127.0.0.1 (a server) or for client
// authentication (client), and returns its certificate and key files.
func (ca *authority) leaf(t *testing.T, name string, client bool) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(nextSerial()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		template.ExtKeyUsage, template.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.certificate, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".crt"), filepath.Join(ca.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func nextSerial() int64 {
	serial++
	return serial
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsServer serves fake over TLS with the CA's certificate for 127.0.0.1; with
// requireClientCert, only clients with a certificate the CA signed get through (mTLS).
func tlsServer(t *testing.T, ca *authority, fake *fakeScheduler, requireClientCert bool) string {
	t.Helper()
	certFile, keyFile := ca.leaf(t, "scheduler", false)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	config := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if requireClientCert {
		pool := x509.NewCertPool()
		pool.AddCert(ca.certificate)
		config.ClientCAs, config.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return serve(t, fake, grpc.Creds(credentials.NewTLS(config)))
}

func TestTLSWithTheSchedulersCA(t *testing.T) {
	ca := newAuthority(t, "test-ca")
	fake := &fakeScheduler{}
	address := tlsServer(t, ca, fake, false)

	trusted := newClient(t, address, switchyard.WithTLS(switchyard.TLS{CAFile: ca.certFile}))
	if _, err := trusted.Queues(testContext(t)); err != nil {
		t.Fatalf("Queues over TLS: %v", err)
	}
	other := newAuthority(t, "other-ca")
	untrusting := newClient(t, address, switchyard.WithTLS(switchyard.TLS{CAFile: other.certFile}))
	if _, err := untrusting.Queues(testContext(t)); !errors.Is(err, switchyard.ErrUnavailable) {
		t.Errorf("a client trusting another CA got %v; want UNAVAILABLE (handshake refused)", err)
	}
	plaintext := newClient(t, address)
	if _, err := plaintext.Queues(testContext(t)); err == nil {
		t.Error("a plaintext client reached a TLS scheduler")
	}
	if fake.callCount() != 1 {
		t.Errorf("%d calls reached the scheduler; only the trusting client's should", fake.callCount())
	}
}

func TestMutualTLSNeedsTheClientCertificate(t *testing.T) {
	ca := newAuthority(t, "test-ca")
	fake := &fakeScheduler{}
	address := tlsServer(t, ca, fake, true)
	certFile, keyFile := ca.leaf(t, "client-1", true)

	withCert := newClient(t, address, switchyard.WithTLS(switchyard.TLS{CAFile: ca.certFile, CertFile: certFile, KeyFile: keyFile}))
	if _, err := withCert.Queues(testContext(t)); err != nil {
		t.Fatalf("Queues with a client certificate: %v", err)
	}
	withoutCert := newClient(t, address, switchyard.WithTLS(switchyard.TLS{CAFile: ca.certFile}))
	if _, err := withoutCert.Queues(testContext(t)); err == nil {
		t.Error("a client without a certificate reached an mTLS scheduler")
	}
}

func TestUnusableTLSFilesAreReportedByNew(t *testing.T) {
	ca := newAuthority(t, "test-ca")
	certFile, _ := ca.leaf(t, "client-1", true)
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	cases := map[string]switchyard.TLS{
		"cannot read the TLS CA file":       {CAFile: filepath.Join(t.TempDir(), "missing.crt")},
		"holds no PEM CERTIFICATE":          {CAFile: notPEM},
		"certificate was given without its": {CertFile: certFile},
	}
	for wanted, settings := range cases {
		_, err := switchyard.New("127.0.0.1:1", switchyard.WithTLS(settings))
		if !errors.Is(err, switchyard.ErrInvalidArgument) || !strings.Contains(err.Error(), wanted) {
			t.Errorf("New with %+v = %v; want INVALID_ARGUMENT containing %q", settings, err, wanted)
		}
	}
}

func TestTheTokenTravelsAsBearerMetadata(t *testing.T) {
	fake := &fakeScheduler{}
	address := serve(t, fake)
	client := newClient(t, address, switchyard.WithToken("s3cret-token"))
	if _, err := client.Queues(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if got := fake.lastMetadata().Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret-token" {
		t.Errorf("authorization metadata = %q", got)
	}

	anonymous := newClient(t, address)
	if _, err := anonymous.Queues(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if got := fake.lastMetadata().Get("authorization"); len(got) != 0 {
		t.Errorf("a client without a token sent authorization %q", got)
	}

	if _, err := switchyard.New(address, switchyard.WithToken("two words")); !errors.Is(err, switchyard.ErrInvalidArgument) ||
		strings.Contains(err.Error(), "two words") {
		t.Errorf("a token with a space: %v; want INVALID_ARGUMENT that does not echo the token", err)
	}
}

func TestARotatedTokenFileIsReadAgain(t *testing.T) {
	fake := &fakeScheduler{}
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := newClient(t, serve(t, fake), switchyard.WithTokenFile(path))
	for _, token := range []string{"first-token", "the-second-token"} {
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Queues(testContext(t)); err != nil {
			t.Fatal(err)
		}
		if got := fake.lastMetadata().Get("authorization"); len(got) != 1 || got[0] != "Bearer "+token {
			t.Errorf("after writing %q the client sent %q", token, got)
		}
	}
}

func TestTheEnvironmentSuppliesTheTokenUnlessToldNotTo(t *testing.T) {
	fake := &fakeScheduler{}
	address := serve(t, fake)
	for _, name := range []string{switchyard.TokenFileEnv, switchyard.TLSCAEnv, switchyard.TLSCertEnv, switchyard.TLSKeyEnv, switchyard.TLSServerNameEnv} {
		t.Setenv(name, "") // the secured live run sets these; this test wants a plaintext fake
	}
	t.Setenv(switchyard.TokenEnv, "from-the-environment")

	client, err := switchyard.New(address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Queues(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if got := fake.lastMetadata().Get("authorization"); len(got) != 1 || got[0] != "Bearer from-the-environment" {
		t.Errorf("with $%s set the client sent %q", switchyard.TokenEnv, got)
	}
	isolated := newClient(t, address) // newClient adds WithoutEnvironment
	if _, err := isolated.Queues(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if got := fake.lastMetadata().Get("authorization"); len(got) != 0 {
		t.Errorf("WithoutEnvironment still sent %q", got)
	}

	t.Setenv(switchyard.TLSServerNameEnv, "scheduler.internal")
	if _, err := switchyard.New(address); !errors.Is(err, switchyard.ErrInvalidArgument) {
		t.Errorf("$%s alone (no TLS) = %v; want INVALID_ARGUMENT", switchyard.TLSServerNameEnv, err)
	}
}
