// Package mtls is the one place in ESCAPE that knows how identities,
// certificates and TLS configurations work. The plane reaches the node
// agent on every host over gRPC, agents fetch checkpoint images from each
// other over the same kind of link, and operators reach the plane's HTTPS
// API: every one of these links is TLS 1.3 with a certificate on both
// sides, and this package makes, loads, reloads and checks them.
//
// # Identities
//
// An identity is a role and a name, carried in a certificate as one URI
// SAN in the SPIFFE style:
//
//	spiffe://escape.mtd/<role>/<name>
//
// Roles are agent (a node agent; the name is its host's name), plane, and
// operator (a person or a tool). Names match ^[a-z0-9][a-z0-9_.-]{0,62}$.
// A certificate must carry exactly one URI SAN of the escape.mtd trust
// domain; URIs of other schemes or domains are ignored. An agent's
// certificate also names its host as a DNS SAN and its listen addresses as
// IP SANs, so the plane dialing 198.18.0.11:7443 for agent h1 verifies
// "h1" in the usual way; agents and the plane may serve and be clients
// (ExtKeyUsage ServerAuth and ClientAuth), operators are only clients.
//
// A server accepts the roles it lists (ServerConfig(RolePlane) on an
// agent's plane-facing port; RolePlane, RoleAgent where agents fetch images
// from each other; RoleOperator on the plane's HTTPS API) and an Authorizer
// decides per method. A client names the one identity it will talk to
// (ClientConfig(Identity{RoleAgent, "h1"})): the server's certificate must
// chain to the CA, name the host, and carry exactly that identity.
//
// # Certificates
//
// CA issues identities with crypto/x509 and ECDSA P-256. `escape-plane
// certs` is its command line (InitCA, IssueFiles, ShowCertificate):
//
//	escape-plane certs init  --dir /root/escape-ca
//	escape-plane certs issue --ca-dir /root/escape-ca --out-dir /etc/escape/tls \
//	    --role agent --name h1 --ip 198.18.0.11
//	escape-plane certs show  /etc/escape/tls/h1.crt
//
// Files are written atomically (keys 0600, certificates 0644), and an
// existing key is never replaced without --force. Keep the CA directory off
// the hosts.
//
// # Files
//
// A process names three files, always by absolute path (Files):
//
//   - CA: the PEM bundle of the CAs peers must chain to. During a CA
//     rotation it holds the old and the new CA.
//   - Cert: the own certificate, then any intermediates, in PEM.
//   - Key: the own private key in PEM (PKCS#8, SEC 1 or PKCS#1), unencrypted.
//
// Under systemd, `certs issue` lays them out as IssuedFiles(dir, name):
// dir/ca.crt, dir/<name>.crt, dir/<name>.key, e.g. in /etc/escape/tls.
//
// Under Kubernetes, a cert-manager Certificate (with `uris:
// [spiffe://escape.mtd/agent/h1]`, `dnsNames: [h1]`, `usages: [server
// auth, client auth]`, an ECDSA P-256 private key) produces a TLS Secret;
// mounted as a directory it holds ca.crt, tls.crt and tls.key, which
// SecretFiles(dir) names. The Secret's tls.crt may hold intermediates after
// the leaf; ca.crt is the root the chain ends at.
//
// # Rotation
//
// Nothing restarts. A Source looks at its three files (size, mtime and
// inode, through symlinks) at most once per WithReloadCheck interval, at
// the next handshake, and loads them again when any changed. That covers
// files replaced by atomic rename and the kubelet's update of a mounted
// Secret (a new timestamped directory, and the ..data symlink swapped to
// it). A reload that fails (a corrupt file, a key that is not the
// certificate's because the rotation is half done, a certificate of
// another identity) keeps the material in use, logs an error and counts
// escape_tls_reload_errors_total; it is tried again when the files change
// again. A good reload logs the new NotAfter, which
// escape_tls_certificate_not_after_timestamp_seconds also shows: alert on
// it. Reload loads at once.
//
// New handshakes use the new material; connections already up keep theirs.
// So that every connection re-handshakes from time to time, and so picks
// up a rotated CA, give gRPC servers a maximum connection age:
//
//	grpc.KeepaliveParams(keepalive.ServerParameters{
//		MaxConnectionAge:      time.Hour,
//		MaxConnectionAgeGrace: time.Minute,
//	})
//
// Validity is checked at every handshake against the clock, and again at
// every call by UnaryServerInterceptor, StreamServerInterceptor and their
// client twins (CheckPeer), so a peer whose certificate expires while its
// connection is up is refused from then on.
//
// A Listener bounds the handshakes it runs at once and how long each may
// take (MaxPendingHandshakes, HandshakeTimeout). A gRPC server handshakes
// each connection on a goroutine of its own for up to grpc.ConnectionTimeout
// (120 s by default): give it grpc.ConnectionTimeout(10 * time.Second) too.
//
// # Refusals
//
// Every failed handshake and refused peer is classified (Classify) into
// a Reason: plaintext, unknown-ca, expired, not-yet-valid, name-mismatch,
// no-certificate, role or other; it is counted in
// escape_tls_refusals_total{side, reason} (side is the end that saw it)
// and logged once at warn level with the remote address, the reason and
// the peer's identity and validity when it sent a certificate. Handshakes
// are observed through ServerCredentials, ClientCredentials and Listener.
// A refusal by the other end is logged as "peer refused the handshake":
// in TLS 1.3 a server judges the client's certificate after the client's
// handshake is over, so ClientCredentials waits for the server's first
// record (gRPC servers speak first) and reports the server's alert, not a
// broken pipe later.
package mtls
