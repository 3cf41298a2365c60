package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// TrustDomain is the authority part of every ESCAPE identity URI.
const TrustDomain = "escape.mtd"

const uriPrefix = "spiffe://" + TrustDomain + "/"

// Role is what a certificate's holder is in ESCAPE.
type Role string

// The roles. A listener names the roles it accepts (ServerConfig).
const (
	// RoleAgent is a node agent; its name is its host's name.
	RoleAgent Role = "agent"
	// RolePlane is the control plane.
	RolePlane Role = "plane"
	// RoleOperator is a person or a tool driving the plane's HTTPS API.
	RoleOperator Role = "operator"
)

var roles = []Role{RoleAgent, RolePlane, RoleOperator}

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	for _, k := range roles {
		if r == k {
			return true
		}
	}
	return false
}

// ParseRole answers s as a Role, or an error naming the roles there are.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Valid() {
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (want agent, plane or operator)", s)
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidName reports whether name may name an identity: lower-case letters,
// digits, '_', '.', '-', starting with a letter or digit, at most 63 bytes
// (so that an agent's name is also a DNS label-sized host name).
func ValidName(name string) bool { return namePattern.MatchString(name) }

// Identity is who a certificate says its holder is.
type Identity struct {
	Role Role
	Name string
}

// URI is the identity as a certificate carries it, in a URI SAN:
// spiffe://escape.mtd/<role>/<name>.
func (id Identity) URI() string { return uriPrefix + string(id.Role) + "/" + id.Name }

// String is the short form used in logs and messages: <role>/<name>.
func (id Identity) String() string { return string(id.Role) + "/" + id.Name }

// Validate reports what is wrong with id, if anything.
func (id Identity) Validate() error {
	if err := id.check(); err != nil {
		return fmt.Errorf("identity %s: %w", id, err)
	}
	return nil
}

func (id Identity) check() error {
	if _, err := ParseRole(string(id.Role)); err != nil {
		return err
	}
	if !ValidName(id.Name) {
		return fmt.Errorf("bad name %q: want %s", id.Name, namePattern)
	}
	return nil
}

// ParseIdentity reads an identity URI (spiffe://escape.mtd/<role>/<name>).
// It is strict: no other trust domain, no user, port, query or fragment,
// no trailing slash, nothing percent-encoded.
func ParseIdentity(uri string) (Identity, error) {
	if len(uri) > 256 {
		return Identity{}, fmt.Errorf("identity URI of %d bytes: too long", len(uri))
	}
	rest, ok := strings.CutPrefix(uri, "spiffe://")
	if !ok {
		return Identity{}, fmt.Errorf("identity %q: want a spiffe:// URI", uri)
	}
	domain, path, ok := strings.Cut(rest, "/")
	if domain != TrustDomain {
		return Identity{}, fmt.Errorf("identity %q: trust domain %q, want %q", uri, domain, TrustDomain)
	}
	role, name, ok2 := strings.Cut(path, "/")
	if !ok || !ok2 || strings.Contains(name, "/") {
		return Identity{}, fmt.Errorf("identity %q: want spiffe://%s/<role>/<name>", uri, TrustDomain)
	}
	id := Identity{Role: Role(role), Name: name}
	if err := id.check(); err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", uri, err)
	}
	return id, nil
}

// IdentityOf reads the identity a certificate carries: exactly one URI SAN
// in the escape.mtd trust domain. URIs of other schemes or trust domains
// are not ESCAPE's business and are ignored.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("no certificate")
	}
	var found []string
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") && strings.EqualFold(u.Host, TrustDomain) {
			found = append(found, u.String())
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q carries no %s identity (a URI SAN %s<role>/<name>)",
			cert.Subject.CommonName, TrustDomain, uriPrefix)
	case 1:
		id, err := ParseIdentity(found[0])
		if err != nil {
			return Identity{}, fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
		}
		return id, nil
	default:
		return Identity{}, fmt.Errorf("certificate %q carries %d %s identities (%s), want exactly one",
			cert.Subject.CommonName, len(found), TrustDomain, strings.Join(found, ", "))
	}
}
