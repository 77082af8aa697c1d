// Package certs makes and loads the cluster's TLS certificates: one CA
// per cluster, one certificate per node (server and client: the node's
// fenced API and its etcd member serve with it and call the other nodes
// with it) and one for the operator's CLI ("admin", client only).
//
// Every connection between nodes is mutual TLS against that CA only, not
// the system roots: a certificate from anywhere else, however valid, is
// not a member of the cluster.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/mhcodi/mhcodi/configs"
)

// Admin is the name of the CLI's client certificate. No node may have it.
const Admin = "admin"

// File names in the TLS directory.
const (
	CACert = "ca.crt"
	CAKey  = "ca.key"
)

// Validity. There is no renewal machinery: the certificates last as long
// as the hardware does, and `mhcodi cluster init --force` starts over.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 10 * 365 * 24 * time.Hour
	// backdate covers clocks of other nodes that are a little behind.
	backdate = time.Hour
)

// ErrCAExists: there is a CA certificate that Generate cannot use (its
// key is missing) and it was not told to replace it.
var ErrCAExists = errors.New("certs: the cluster CA already exists")

// CertFile and KeyFile are where name's certificate and key live in dir.
func CertFile(dir, name string) string { return filepath.Join(dir, name+".crt") }
func KeyFile(dir, name string) string  { return filepath.Join(dir, name+".key") }

// Options of Generate.
type Options struct {
	// Force replaces an existing CA, and with it every certificate.
	// Certificates signed by the old CA stop working at once.
	Force bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Action is one file Generate wrote or kept.
type Action struct {
	Name string // "ca", a node, or Admin
	Path string // the certificate
	// What is "created", "replaced" (the CA was replaced, or the node's
	// addresses changed) or "kept".
	What string
}

// Init makes the CA if there is none and a certificate for every node of
// cfg and for admin that lacks a valid one; it never replaces an existing
// CA (see Generate).
func Init(cfg *configs.Config, dir string) error {
	_, err := Generate(cfg, dir, Options{})
	return err
}

// Generate writes the cluster's certificates into dir. Without a CA it
// makes one (ECDSA P-256). With one, it keeps it and adds what is missing
// (idempotent: adding a node to the cluster file and running it again is
// enough); only Force makes a new CA and reissues everything. A node's
// certificate is reissued when it is missing, not signed by the CA, or its
// addresses differ from the cluster file. It returns what it did, file by
// file.
func Generate(cfg *configs.Config, dir string, opts Options) ([]Action, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	for _, n := range cfg.Nodes {
		if n.Name == Admin {
			return nil, fmt.Errorf("certs: node %q: the name is reserved for the CLI's certificate", n.Name)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}

	var acts []Action
	ca, err := loadCA(dir)
	switch {
	case err == nil && !opts.Force:
		acts = append(acts, Action{Name: "ca", Path: filepath.Join(dir, CACert), What: "kept"})
	case err == nil || opts.Force || errors.Is(err, os.ErrNotExist):
		what := "created"
		if err == nil {
			what = "replaced"
		}
		if ca, err = newCA(cfg.Cluster.Name, now()); err != nil {
			return nil, err
		}
		if err := ca.write(dir); err != nil {
			return nil, err
		}
		acts = append(acts, Action{Name: "ca", Path: filepath.Join(dir, CACert), What: what})
	default:
		return nil, err
	}

	type leaf struct {
		name   string
		ips    []net.IP
		server bool
	}
	leaves := make([]leaf, 0, len(cfg.Nodes)+1)
	for _, n := range cfg.Nodes {
		leaves = append(leaves, leaf{n.Name, nodeIPs(n), true})
	}
	leaves = append(leaves, leaf{Admin, nil, false})
	for _, l := range leaves {
		what := "created"
		if old, err := readCert(CertFile(dir, l.name)); err == nil {
			if ca.signed(old) && sameIPs(old.IPAddresses, l.ips) {
				acts = append(acts, Action{Name: l.name, Path: CertFile(dir, l.name), What: "kept"})
				continue
			}
			what = "replaced"
		}
		if err := ca.issue(dir, l.name, l.ips, l.server, now()); err != nil {
			return nil, err
		}
		acts = append(acts, Action{Name: l.name, Path: CertFile(dir, l.name), What: what})
	}
	return acts, nil
}

// nodeIPs are the addresses a node's certificate vouches for: the
// management address (fenced, etcd) and the SAN address.
func nodeIPs(n configs.Node) []net.IP {
	var ips []net.IP
	for _, a := range []configs.Address{n.MgmtAddress, n.SANAddress} {
		if a.IsZero() {
			continue
		}
		ip := net.IP(a.IP.AsSlice())
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	return ips
}

func sameIPs(a, b []net.IP) bool {
	if len(a) != len(b) {
		return false
	}
	for _, ip := range a {
		if !slices.ContainsFunc(b, ip.Equal) {
			return false
		}
	}
	return true
}

// authority is the CA: its certificate and key.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(cluster string, now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "mhcodi cluster " + cluster + " CA", Organization: []string{"mhcodi"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Only leaves below it: a stolen node key cannot mint a sub-CA.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certs: CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: CA: %w", err)
	}
	return &authority{cert: cert, key: key}, nil
}

func (ca *authority) write(dir string) error {
	if err := writeKey(filepath.Join(dir, CAKey), ca.key); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, CACert), "CERTIFICATE", ca.cert.Raw, 0o644)
}

// signed reports whether c was issued by this CA.
func (ca *authority) signed(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(ca.cert) == nil
}

// issue writes name's key and certificate, valid from now.
func (ca *authority) issue(dir, name string, ips []net.IP, server bool, now time.Time) error {
	return ca.issueValid(dir, name, ips, server, now.Add(-backdate), now.Add(leafValidity))
}

func (ca *authority) issueValid(dir, name string, ips []net.IP, server bool, notBefore, notAfter time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: %s key: %w", name, err)
	}
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"mhcodi"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		IPAddresses:  ips,
	}
	// No DNS names: nodes reach each other by address only (the cluster
	// file refuses host names), and a name in a certificate invites
	// verifiers (etcd's) to look it up when the network is in trouble.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return fmt.Errorf("certs: %s: %w", name, err)
	}
	// The key first: a certificate without its key is worse than none,
	// since the next run would keep it.
	if err := writeKey(KeyFile(dir, name), key); err != nil {
		return err
	}
	return writePEM(CertFile(dir, name), "CERTIFICATE", der, 0o644)
}

func loadCA(dir string) (*authority, error) {
	cert, err := readCert(filepath.Join(dir, CACert))
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, CAKey))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("certs: %s exists but %s does not; restore it, or make a new CA with --force: %w", CACert, CAKey, ErrCAExists)
		}
		return nil, fmt.Errorf("certs: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("certs: %s: no PEM block", filepath.Join(dir, CAKey))
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", filepath.Join(dir, CAKey), err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: %s: not a signing key", filepath.Join(dir, CAKey))
	}
	return &authority{cert: cert, key: signer}, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certs: %s: no certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	return c, nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM replaces path atomically, so a crash leaves the old file or
// the new one, never half of one.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	var buf bytes.Buffer
	if err := pem.Encode(&buf, &pem.Block{Type: typ, Bytes: der}); err != nil {
		return fmt.Errorf("certs: %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	// WriteFile keeps the mode of an existing file; a key must be 0600.
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on Linux (it would panic itself).
		panic(err)
	}
	return n
}

// Pool returns a pool holding only the cluster CA of dir.
func Pool(dir string) (*x509.CertPool, error) {
	b, err := os.ReadFile(filepath.Join(dir, CACert))
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("certs: %s: no certificate", filepath.Join(dir, CACert))
	}
	return p, nil
}

// ServerTLS is the TLS configuration of node's servers (fenced's API):
// the node's certificate, and a client certificate signed by the cluster
// CA required of every caller.
func ServerTLS(dir, node string) (*tls.Config, error) {
	pool, cert, err := load(dir, node)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientTLS is the TLS configuration with which node (or Admin) calls
// other nodes: its own certificate, and servers trusted only if the
// cluster CA signed them for the address dialled.
func ClientTLS(dir, node string) (*tls.Config, error) {
	pool, cert, err := load(dir, node)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}, nil
}

func load(dir, name string) (*x509.CertPool, tls.Certificate, error) {
	pool, err := Pool(dir)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	cert, err := tls.LoadX509KeyPair(CertFile(dir, name), KeyFile(dir, name))
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("certs: %s: %w (run mhcodi cluster init)", name, err)
	}
	return pool, cert, nil
}

// ErrNotPeer: a connection's client is not a node of the cluster nor the
// CLI. Whoever gets it refuses the request and logs why.
var ErrNotPeer = errors.New("certs: not a member of the cluster")

// PeerName returns who is calling on a connection served with ServerTLS:
// the common name of its client certificate once the handshake verified
// it against the cluster CA. Without a verified chain (a plain
// connection, a server that did not ask) it is ErrNotPeer.
func PeerName(cs *tls.ConnectionState) (string, error) {
	if cs == nil {
		return "", fmt.Errorf("%w: not a TLS connection", ErrNotPeer)
	}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", fmt.Errorf("%w: no verified client certificate", ErrNotPeer)
	}
	leaf := cs.VerifiedChains[0][0]
	if leaf.Subject.CommonName == "" {
		return "", fmt.Errorf("%w: the client certificate has no common name", ErrNotPeer)
	}
	return leaf.Subject.CommonName, nil
}

// CheckPeer is PeerName, and the name must also be a node of cfg or
// Admin: a node removed from the cluster file keeps a certificate the CA
// signed, and must not be let in by it.
func CheckPeer(cfg *configs.Config, cs *tls.ConnectionState) (string, error) {
	name, err := PeerName(cs)
	if err != nil {
		return "", err
	}
	if name == Admin {
		return name, nil
	}
	if _, ok := cfg.Node(name); !ok {
		return "", fmt.Errorf("%w: %q is not a node of cluster %s", ErrNotPeer, name, cfg.Cluster.Name)
	}
	return name, nil
}
