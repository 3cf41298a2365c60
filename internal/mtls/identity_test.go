package mtls

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestParseIdentity(t *testing.T) {
	good := map[string]Identity{
		"spiffe://escape.mtd/agent/h1":                         agentH1,
		"spiffe://escape.mtd/plane/plane":                      thePlane,
		"spiffe://escape.mtd/operator/ci_bot.2":                {RoleOperator, "ci_bot.2"},
		"spiffe://escape.mtd/agent/" + strings.Repeat("a", 63): {RoleAgent, strings.Repeat("a", 63)},
	}
	for uri, want := range good {
		got, err := ParseIdentity(uri)
		if err != nil || got != want {
			t.Errorf("ParseIdentity(%q) = %v, %v; want %v", uri, got, err, want)
		}
		if got.URI() != uri {
			t.Errorf("%v.URI() = %q, want %q", got, got.URI(), uri)
		}
	}
	bad := map[string]string{
		"":                                                     "spiffe://",
		"https://escape.mtd/agent/h1":                          "spiffe://",
		"spiffe://other.org/agent/h1":                          "trust domain",
		"spiffe://user@escape.mtd/agent/h1":                    "trust domain",
		"spiffe://escape.mtd:443/agent/h1":                     "trust domain",
		"spiffe://escape.mtd/agent":                            "<role>/<name>",
		"spiffe://escape.mtd/agent/h1/":                        "<role>/<name>",
		"spiffe://escape.mtd/agent/h1/x":                       "<role>/<name>",
		"spiffe://escape.mtd/root/h1":                          `unknown role "root"`,
		"spiffe://escape.mtd/Agent/h1":                         `unknown role "Agent"`,
		"spiffe://escape.mtd/agent/H1":                         "bad name",
		"spiffe://escape.mtd/agent/-h1":                        "bad name",
		"spiffe://escape.mtd/agent/h%31":                       "bad name",
		"spiffe://escape.mtd/agent/h1?x=1":                     "bad name",
		"spiffe://escape.mtd/agent/":                           "bad name",
		"spiffe://escape.mtd/agent/" + strings.Repeat("a", 64): "bad name",
		"spiffe://escape.mtd/" + strings.Repeat("a", 300):      "too long",
	}
	for uri, says := range bad {
		if id, err := ParseIdentity(uri); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("ParseIdentity(%q) = %v, %v; want an error saying %q", uri, id, err, says)
		}
	}
}

func TestIdentityStringAndValidate(t *testing.T) {
	if s := agentH1.String(); s != "agent/h1" {
		t.Errorf("String() = %q", s)
	}
	if err := agentH1.Validate(); err != nil {
		t.Error(err)
	}
	if err := (Identity{Role: RolePlane, Name: "Plane"}).Validate(); err == nil || !strings.Contains(err.Error(), "bad name") {
		t.Errorf("Validate of a capitalised name: %v", err)
	}
	if _, err := ParseRole("admin"); err == nil || !strings.Contains(err.Error(), "agent, plane or operator") {
		t.Errorf("ParseRole(admin): %v", err)
	}
}

func TestIdentityOf(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		uris []*url.URL
		want Identity
		says string
	}{
		{[]*url.URL{u("spiffe://escape.mtd/agent/h1")}, agentH1, ""},
		// Other trust domains and schemes are someone else's business.
		{[]*url.URL{u("https://example.org/x"), u("spiffe://other.org/agent/h9"), u("spiffe://escape.mtd/plane/plane")}, thePlane, ""},
		{nil, Identity{}, "carries no escape.mtd identity"},
		{[]*url.URL{u("spiffe://other.org/agent/h1")}, Identity{}, "carries no escape.mtd identity"},
		{[]*url.URL{u("spiffe://escape.mtd/agent/h1"), u("spiffe://escape.mtd/agent/h2")}, Identity{}, "carries 2 escape.mtd identities"},
		{[]*url.URL{u("spiffe://escape.mtd/wizard/h1")}, Identity{}, `unknown role "wizard"`},
		{[]*url.URL{u("spiffe://ESCAPE.MTD/agent/h1")}, Identity{}, "trust domain"},
	}
	for _, tc := range cases {
		got, err := IdentityOf(&x509.Certificate{URIs: tc.uris})
		switch {
		case tc.says == "" && (err != nil || got != tc.want):
			t.Errorf("IdentityOf(%v) = %v, %v; want %v", tc.uris, got, err, tc.want)
		case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)):
			t.Errorf("IdentityOf(%v) = %v, %v; want an error saying %q", tc.uris, got, err, tc.says)
		}
	}
	if _, err := IdentityOf(nil); err == nil {
		t.Error("IdentityOf(nil) succeeded")
	}
}
